#!/usr/bin/env bash
# bench/run.sh - mproc's pool benchmark and its Python peer, side by side.
#
# Builds if needed (`make build` at the repo root), runs bench/peer_pool.py
# (multiprocessing.Pool(2)) and build/pool_bench one after the other on the
# same workload (f(x) = x + 1 on int64, 2 workers), then prints the raw
# lines and a table: measurement | mproc | Python | ratio | target.
#
# Works from any directory and without stdin.  About 1.5-2.5 minutes.
#
# Environment:
#   MPROC_BENCH_STREAM_SECONDS  cap for the 10M-item stream run (default 60):
#                               the input ends there, every item fed is still
#                               checked, and the line says how many ran
#   MPROC_BENCH_NO_BUILD=1      use the existing build/ as it is
#   BUILD_DIR                   the build tree (default: <repo>/build)
#   PYTHON                      the Python for the peer (default: python3)
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
stream_seconds=${MPROC_BENCH_STREAM_SECONDS:-60}

make_log_dir mproc-bench

# --- build -------------------------------------------------------------------

build_bench pool_bench

# --- run ---------------------------------------------------------------------

machine_lines "$("$python" --version 2>&1)"
echo

echo "== Python peer: bench/peer_pool.py"
run 150 "$log_dir/py.txt" "$python" "$here/peer_pool.py" \
    --items 200000 --workers 2 --rounds 2000 --warmup 200
echo
echo "== mproc: pool_bench"
run 100 "$log_dir/mp1.txt" "$bench" --mode putget --items 200000 --workers 2
run 60 "$log_dir/mp2.txt" "$bench" --mode map --items 200000 --workers 2
run 60 "$log_dir/mp3.txt" "$bench" --mode latency --rounds 20000 \
    --warmup 1000 --workers 2
# The stream runs with queue_size 256: still a fixed bound, deep enough that
# all 10M items pass in seconds (the default queue would take minutes).
run $((stream_seconds + 90)) "$log_dir/mp4.txt" "$bench" --mode stream \
    --items 10000000 --workers 2 --queue 256 --max-seconds "$stream_seconds"
cat "$log_dir"/mp[1-4].txt >"$log_dir/mproc.txt"

# --- table -------------------------------------------------------------------

# mp / py MEASUREMENT KEY [MATCH]: the value of KEY= on the first line of
# mproc's / Python's output that starts with MEASUREMENT and contains MATCH;
# empty if none.
mp() { field "$1" "$2" "${3:-}" "$log_dir/mproc.txt" first; }
py() { field "$1" "$2" "" "$log_dir/py.txt" first; }

fmt='| %-42s | %12s | %10s | %8s | %-18s |\n'
# row LABEL MPROC PYTHON TARGET KIND: KIND is "ge" (ratio >= target), "le"
# (ratio <= target) or "-" (report only).
row() {
    ratio_cells "$2" "$3" "$4" "$5"
    # shellcheck disable=SC2059 # one format for every row
    printf "$fmt" "$1" "${2:--}" "${3:--}" "$cell_ratio" "$cell_target"
}

echo
echo "== Summary (2 workers; f(x) = x + 1; ratio = mproc / Python)"
table_head "$fmt" measurement mproc Python ratio target
py_putget=$(py putget tasks_per_s)
row "put/get per item, default queue (tasks/s)" \
    "$(mp putget tasks_per_s queue=default)" "$py_putget" 10 ge
row "put/get per item, queue 4096 (tasks/s)" \
    "$(mp putget tasks_per_s queue=4096)" "$py_putget" 10 ge
row "map vs Pool.map (tasks/s)" "$(mp map tasks_per_s)" \
    "$(py map tasks_per_s)" 3 ge
row "round trip vs Pool.apply, median (us)" "$(mp latency median_us)" \
    "$(py latency median_us)" 0.15 le
row "round trip vs Pool.apply, p99 (us)" "$(mp latency p99_us)" \
    "$(py latency p99_us)" 0.1 le
row "round trip vs pipe ping-pong, median (us)" "$(mp latency median_us)" \
    "$(mp latency pipe_median_us)" 2 le
row "stream, $(mp stream items) items (tasks/s)" \
    "$(mp stream tasks_per_s)" "" report -
row "stream RSS at 1M items (kB)" "$(mp stream rss_1m_kb)" "" report -
row "stream RSS at the end (kB)" "$(mp stream rss_end_kb)" "" report -
row "stream peak RSS, VmHWM (kB)" "$(mp stream peak_rss_kb)" "" report -
echo
echo "Python imap(chunksize=1) is the peer of both put/get lines; its input"
echo "is not bounded by a queue, so the queue-4096 line is the like-for-like"
echo "one.  See bench/README.md for what each line measures."
exit "$status"
