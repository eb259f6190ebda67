#!/usr/bin/env bash
# bench/run_super.sh - mproc's supervisor (mproc/super.h) against a direct
# pipe between two processes, and against a bare relay (the same hops
# through a third process, with no library): routed messages per second,
# and the round trip process -> supervisor -> process and back.
#
# Builds if needed (`make build` at the repo root), runs build/super_bench
# in interleaved rounds (throughput, then latency, round after round; each
# run measures mproc, then its floors: the pipe right after it, or in the
# latency run sample by sample between the same two processes; then the
# bare relay), and prints
# the raw lines and a table of medians: measurement | mproc | floor |
# floor is | ratio | target.
#
# Works from any directory and without stdin.  About 10-15 seconds with
# the default 5 rounds.
#
# Environment:
#   MPROC_BENCH_ROUNDS      rounds (default 5; the table shows medians)
#   MPROC_BENCH_MESSAGES    messages per throughput run (default 200000)
#   MPROC_BENCH_SAMPLES     round trips per latency run (default 5000, after
#                           500 untimed)
#   MPROC_BENCH_PIN         a CPU list for taskset (e.g. 0): run every
#                           measurement pinned to it
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
pin=${MPROC_BENCH_PIN:-}
pinned=() # the command prefix of the pinned runs
if [ -n "$pin" ]; then
    pinned=(taskset -c "$pin")
fi
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

machine_lines "$(ldd --version 2>/dev/null | head -n 1 | sed "s/^ldd //")"
if [ -n "$pin" ]; then
    echo "pinned:  CPU $pin (taskset): every measurement"
fi
echo

out=$log_dir/super.txt
: >"$out"
echo "== $rounds interleaved rounds: super_bench throughput, latency"
for ((r = 1; r <= rounds; r++)); do
    run 120 "$out" "${pinned[@]}" "$bench" --mode throughput \
        --messages "$messages"
    run 120 "$out" "${pinned[@]}" "$bench" --mode latency \
        --samples "$samples" --warmup 500
done

# --- table -------------------------------------------------------------------

fmt='| %-38s | %9s | %9s | %-15s | %7s | %-15s |\n'
# row LABEL MPROC FLOOR FLOORNAME TARGET KIND: the ratio is MPROC / FLOOR.
# KIND is "ge" (ratio >= TARGET), "le" (ratio <= TARGET) or "-" (report
# only; TARGET is printed as it is).
row() {
    ratio_cells "$2" "$3" "$5" "$6" "" "no figure"
    # shellcheck disable=SC2059 # one format for every row
    printf "$fmt" "$1" "${2:--}" "${3:--}" "$4" "$cell_ratio" "$cell_target"
}
m() { field "$1" "$2" "${3:-}" "$out" "${4:-}"; }

echo
pin_note=""
[ -z "$pin" ] || pin_note="; pinned to CPU $pin"
echo "== Summary (median of $rounds rounds; ratio = mproc / floor$pin_note)"
table_head "$fmt" measurement mproc floor "floor is" ratio target
routed_tp=$(m throughput msgs_per_s impl=mproc_routed)
routed_p50=$(m latency p50_us impl=mproc_routed)
pipe_p50=$(m latency p50_us impl=pipe_pingpong)
row "routed messages, 16 bytes (msgs/s)" "$routed_tp" \
    "$(m throughput msgs_per_s impl=pipe)" "pipe" 0.5 ge
row "  same" "$routed_tp" "$(m throughput msgs_per_s impl=relay_floor)" \
    "bare relay" report -
row "round trip via supervisor, p50 (us)" "$routed_p50" "$pipe_p50" \
    "pipe round trip" 2 le
row "  same" "$routed_p50" "$(m latency p50_us impl=relay_floor)" \
    "bare relay" report -
row "round trip via supervisor, p99 (us)" \
    "$(m latency p99_us impl=mproc_routed)" \
    "$(m latency p99_us impl=pipe_pingpong)" "pipe round trip" report -
row "  until the waiting op woke, p50" \
    "$(m latency p50_us impl=mproc_op)" "$pipe_p50" "pipe round trip" \
    report -
row "send_sync verdict (2 hops), p50 (us)" \
    "$(m latency p50_us impl=mproc_sync)" "$pipe_p50" "pipe round trip" \
    report -
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
range "bare relay round trip p50 (us)" latency p50_us impl=relay_floor
range "routed / bare relay p50, per run" latency_vs_relay p50_ratio ""
range "routed / bare relay throughput" throughput_vs_relay ratio ""
echo
echo "The routed round trip is A -> supervisor -> B -> supervisor -> A: four"
echo "hops, each a wake-up, against the pipe's two; it is stamped when A's"
echo "message thread receives the answer.  The op line adds the wake-up of"
echo "A's op thread, waiting on a condition.  The bare relay makes the same"
echo "hops through a third process with no library (epoll, read, write)."
echo "See bench/README.md."
exit "$status"
