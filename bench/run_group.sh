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
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
rounds=${MPROC_BENCH_ROUNDS:-3}
case "$rounds" in '' | *[!0-9]* | 0)
    echo "run_group.sh: MPROC_BENCH_ROUNDS must be a positive integer" >&2
    exit 2
    ;;
esac

make_log_dir mproc-gbench

# --- build -------------------------------------------------------------------

build_bench group_bench

# --- run ---------------------------------------------------------------------

# shellcheck disable=SC2119 # no Python version here
machine_lines
echo

echo "== group_bench"
run $((60 * rounds + 60)) "$log_dir/g1.txt" "$bench" --mode overhead \
    --items 200000 --rounds "$rounds"
run 120 "$log_dir/g2.txt" "$bench" --mode flood --bulk 20000 --web 2000 \
    --warmup 200 --spin-us 200
cat "$log_dir"/g[12].txt >"$log_dir/all.txt"

# --- table -------------------------------------------------------------------

# val MEASUREMENT KEY [MATCH]: the value of KEY= on the first line that
# starts with MEASUREMENT and contains MATCH; empty if none.
val() { field "$1" "$2" "${3:-}" "$log_dir/all.txt" first; }

fmt='| %-54s | %10s | %-22s |\n'
# row LABEL VALUE TARGET [LIMIT]: with LIMIT, the target is "<= LIMIT" and
# gets a verdict.
row() {
    local t=$3
    if [ -n "${4:-}" ] && [[ $2 =~ ^[0-9.]+$ ]]; then
        t+=$(awk -v v="$2" -v limit="$4" \
            'BEGIN { print (v + 0 <= limit + 0) ? " met" : " NOT met" }')
    fi
    # shellcheck disable=SC2059 # one format for every row
    printf "$fmt" "$1" "${2:--}" "$t"
}

g_us=$(val overhead us_per_task impl=group)
p_us=$(val overhead us_per_task feed=put_iter)
w_us=$(val overhead us_per_task feed=window)

echo
echo "== Summary (f(x) = x + 1; 2 workers; medians of $rounds rounds)"
table_head "$fmt" measurement value target
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
