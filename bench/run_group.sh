#!/usr/bin/env bash
# bench/run_group.sh - the grouped pool's benchmark (build/group_bench).
#
# Builds if needed (`make build` at the repo root), runs group_bench (the
# per-task overhead of mproc_group against a plain mproc_pool, and the
# latency of a reserved slot under a flood), then prints the raw lines and
# a table: measurement | value | target.
#
# Works from any directory and without stdin.  About 1.5 minutes with the
# default 3 rounds (20-25 s a round, 6 s of flood, plus the build).
#
# Environment:
#   MPROC_BENCH_ROUNDS     rounds of the overhead runs, interleaved; the
#                          table shows medians (default 3)
#   MPROC_BENCH_NO_BUILD=1 use the existing build/ as it is
#   BUILD_DIR              the build tree (default: <repo>/build)
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
rounds=${MPROC_BENCH_ROUNDS:-3}
case "$rounds" in '' | *[!0-9]* | 0)
    echo "run_group.sh: MPROC_BENCH_ROUNDS must be a positive integer" >&2
    exit 2
    ;;
esac

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/mproc-gbench.XXXXXX")
trap 'rm -rf "$log_dir"' EXIT

# --- build -------------------------------------------------------------------

if [ "${MPROC_BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "building ($build) ..."
    if ! make -C "$root" build BUILD_DIR="$build" >"$log_dir/build.log" 2>&1; then
        tail -n 40 "$log_dir/build.log"
        echo "run_group.sh: the build failed" >&2
        exit 1
    fi
fi
bench=$build/group_bench
if [ ! -x "$bench" ]; then
    bench=$(find "$build" -type f -name group_bench -perm -u+x 2>/dev/null |
        head -n 1)
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    echo "run_group.sh: no group_bench executable under $build" >&2
    exit 1
fi

# --- run ---------------------------------------------------------------------

echo "machine: $(nproc) CPUs, $(uname -sr)"
echo "mproc:   $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'no commit'), $bench"
echo

status=0
# run LIMIT OUTFILE CMD...: runs CMD with a time limit, its lines to OUTFILE
# and to the terminal.
run() {
    local limit=$1 out=$2 rc=0
    shift 2
    timeout -k 10 "$limit" "$@" >"$out" || rc=$?
    cat "$out"
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "run_group.sh: '$*' timed out after ${limit}s" >&2
        else
            echo "run_group.sh: '$*' failed (exit $rc)" >&2
        fi
        status=1
    fi
}

echo "== group_bench"
run $((60 * rounds + 60)) "$log_dir/g1.txt" "$bench" --mode overhead \
    --items 200000 --rounds "$rounds"
run 120 "$log_dir/g2.txt" "$bench" --mode flood --bulk 20000 --web 2000 \
    --warmup 200 --spin-us 200
cat "$log_dir"/g[12].txt >"$log_dir/all.txt"

# --- table -------------------------------------------------------------------

# val MEASUREMENT KEY [MATCH]: the value of KEY= on the first line that
# starts with MEASUREMENT and contains MATCH; empty if none.
val() {
    awk -v m="$1" -v k="$2" -v want="${3:-}" '
        $1 == m && index($0, want) {
            for (i = 2; i <= NF; i++) {
                split($i, kv, "=")
                if (kv[1] == k) { print kv[2]; exit }
            }
        }' "$log_dir/all.txt"
}

# row LABEL VALUE TARGET [LIMIT]: with LIMIT, the target is "<= LIMIT" and
# gets a verdict.
row() {
    awk -v label="$1" -v v="$2" -v target="$3" -v limit="${4:-}" '
        BEGIN {
            t = target
            if (limit != "" && v ~ /^[0-9.]+$/)
                t = t ((v + 0 <= limit + 0) ? " met" : " NOT met")
            printf "| %-54s | %10s | %-22s |\n", label, v == "" ? "-" : v, t
        }'
}

g_us=$(val overhead us_per_task impl=group)
p_us=$(val overhead us_per_task feed=put_iter)
w_us=$(val overhead us_per_task feed=window)

echo
echo "== Summary (f(x) = x + 1; 2 workers; medians of $rounds rounds)"
printf '| %-54s | %10s | %-22s |\n' measurement value target
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..56})" \
    "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..24})"
row "group per task, 1 tag x 2 slots, ingest + next (us)" "$g_us" report
row "pool per task, put_iter + get, default queue (us)" "$p_us" report
row "pool per task, put + get, 2 in flight (us)" "$w_us" report
row "group / pool per-task cost, default queue (x)" \
    "$(val overhead_ratio group_vs_pool_default)" "<= 1.5" 1.5
row "group / pool per-task cost, 2 in flight (x)" \
    "$(val overhead_ratio group_vs_pool_window2)" "<= 1.5" 1.5
row "web put-to-completion, idle, p50 (us)" \
    "$(val web_latency p50_us flood=0)" report
row "web put-to-completion, idle, p99 (us)" \
    "$(val web_latency p99_us flood=0)" report
row "web put-to-completion, bulk flood, p50 (us)" \
    "$(val web_latency p50_us flood=1)" report
row "web put-to-completion, bulk flood, p99 (us)" \
    "$(val web_latency p99_us flood=1)" report
row "bulk flood throughput, 1 slot, 200 us tasks (tasks/s)" \
    "$(val bulk tasks_per_s)" "report (ideal 5000)"
echo
echo "The group holds at most 2 tasks in flight (its 2 slots); the default"
echo "pool queue holds up to 6.  See bench/README.md for what each line"
echo "measures."
exit "$status"
