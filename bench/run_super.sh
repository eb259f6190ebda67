#!/usr/bin/env bash
# bench/run_super.sh - mproc's supervisor (mproc/super.h) against a direct
# pipe between two processes: routed messages per second, and the round
# trip process -> supervisor -> process and back.
#
# Builds if needed (`make build` at the repo root), runs build/super_bench
# in interleaved rounds (throughput, then latency, round after round; each
# run measures mproc and its pipe floor one right after the other, the
# latency run sample by sample between the same two processes), and prints
# the raw lines and a table of medians: measurement | mproc | pipe | ratio |
# target.
#
# Works from any directory and without stdin.  About 15-30 seconds with the
# default 5 rounds.
#
# Environment:
#   MPROC_BENCH_ROUNDS      rounds (default 5; the table shows medians)
#   MPROC_BENCH_MESSAGES    messages per throughput run (default 200000)
#   MPROC_BENCH_SAMPLES     round trips per latency run (default 5000, after
#                           500 untimed)
#   MPROC_BENCH_NO_BUILD=1  use the existing build tree as it is
#   BUILD_DIR               the build tree (default: <repo>/build)
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
rounds=${MPROC_BENCH_ROUNDS:-5}
messages=${MPROC_BENCH_MESSAGES:-200000}
samples=${MPROC_BENCH_SAMPLES:-5000}
for v in "$rounds" "$messages" "$samples"; do
    case "$v" in '' | *[!0-9]* | 0)
        echo "run_super.sh: MPROC_BENCH_ROUNDS, MPROC_BENCH_MESSAGES and" \
            "MPROC_BENCH_SAMPLES must be positive integers" >&2
        exit 2 ;;
    esac
done

make_log_dir mproc-bench-super

# --- build -------------------------------------------------------------------

build_bench super_bench

# --- run ---------------------------------------------------------------------

machine_lines
echo

out=$log_dir/super.txt
: >"$out"
echo "== $rounds interleaved rounds: super_bench throughput, latency"
for ((r = 1; r <= rounds; r++)); do
    run 120 "$out" "$bench" --mode throughput --messages "$messages"
    run 120 "$out" "$bench" --mode latency --samples "$samples" --warmup 500
done

# --- table -------------------------------------------------------------------

fmt='| %-40s | %10s | %10s | %8s | %-14s |\n'
# row LABEL MPROC PIPE TARGET KIND: the ratio is MPROC / PIPE.  KIND is
# "ge" (ratio >= TARGET), "le" (ratio <= TARGET) or "-" (report only).
row() {
    ratio_cells "$2" "$3" "$4" "$5" "" "no figure"
    # shellcheck disable=SC2059 # one format for every row
    printf "$fmt" "$1" "${2:--}" "${3:--}" "$cell_ratio" "$cell_target"
}
m() { field "$1" "$2" "${3:-}" "$out" "${4:-}"; }

echo
echo "== Summary (median of $rounds rounds; ratio = mproc / pipe)"
table_head "$fmt" measurement mproc pipe ratio target
row "routed messages, 16 bytes (msgs/s)" \
    "$(m throughput msgs_per_s impl=mproc_routed)" \
    "$(m throughput msgs_per_s impl=pipe)" 0.5 ge
row "round trip via supervisor, p50 (us)" \
    "$(m latency p50_us impl=mproc_routed)" \
    "$(m latency p50_us impl=pipe_pingpong)" 2 le
row "round trip via supervisor, p99 (us)" \
    "$(m latency p99_us impl=mproc_routed)" \
    "$(m latency p99_us impl=pipe_pingpong)" report -
row "  same, until the waiting op woke, p50" \
    "$(m latency p50_us impl=mproc_op)" \
    "$(m latency p50_us impl=pipe_pingpong)" report -
row "send_sync verdict (2 hops), p50 (us)" \
    "$(m latency p50_us impl=mproc_sync)" \
    "$(m latency p50_us impl=pipe_pingpong)" report -
echo
# range LABEL ARGS...: "LABEL min..max" over the rounds
range() {
    local label=$1 lo hi
    shift
    lo=$(m "$@" min) hi=$(m "$@" max)
    [ -n "$lo" ] && printf '  %-40s %s .. %s\n' "$label" "$lo" "$hi"
    return 0
}
echo "spread over the rounds (min .. max):"
range "routed (msgs/s)" throughput msgs_per_s impl=mproc_routed
range "pipe (msgs/s)" throughput msgs_per_s impl=pipe
range "routed / pipe throughput" throughput_vs_pipe ratio ""
range "routed round trip p50 (us)" latency p50_us impl=mproc_routed
range "pipe round trip p50 (us)" latency p50_us impl=pipe_pingpong
range "routed / pipe p50, per run" latency_vs_pipe p50_ratio ""
echo
echo "The routed round trip is A -> supervisor -> B -> supervisor -> A: four"
echo "hops, each a wake-up, against the pipe's two; it is stamped when A's"
echo "message thread receives the answer.  The op line adds the wake-up of"
echo "A's op thread, waiting on a condition.  See bench/README.md."
exit "$status"
