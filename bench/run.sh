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
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
python=${PYTHON:-python3}
stream_seconds=${MPROC_BENCH_STREAM_SECONDS:-60}

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/mproc-bench.XXXXXX")
trap 'rm -rf "$log_dir"' EXIT

# --- build -------------------------------------------------------------------

if [ "${MPROC_BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "building ($build) ..."
    if ! make -C "$root" build BUILD_DIR="$build" >"$log_dir/build.log" 2>&1; then
        tail -n 40 "$log_dir/build.log"
        echo "run.sh: the build failed" >&2
        exit 1
    fi
fi
bench=$build/pool_bench
if [ ! -x "$bench" ]; then
    bench=$(find "$build" -type f -name pool_bench -perm -u+x 2>/dev/null |
        head -n 1)
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    echo "run.sh: no pool_bench executable under $build" >&2
    exit 1
fi

# --- run ---------------------------------------------------------------------

echo "machine: $(nproc) CPUs, $(uname -sr), $("$python" --version 2>&1)"
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
            echo "run.sh: '$*' timed out after ${limit}s" >&2
        else
            echo "run.sh: '$*' failed (exit $rc)" >&2
        fi
        status=1
    fi
}

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

# field FILE MEASUREMENT KEY [MATCH]: the value of KEY= on the first line of
# FILE that starts with MEASUREMENT and contains MATCH; empty if none.
field() {
    awk -v m="$1" -v k="$2" -v want="${3:-}" '
        $1 == m && index($0, want) {
            for (i = 2; i <= NF; i++) {
                split($i, kv, "=")
                if (kv[1] == k) { print kv[2]; exit }
            }
        }' "$4"
}
mp() { field "$1" "$2" "${3:-}" "$log_dir/mproc.txt"; }
py() { field "$1" "$2" "" "$log_dir/py.txt"; }

# row LABEL MPROC PYTHON TARGET KIND: KIND is "ge" (ratio >= target), "le"
# (ratio <= target) or "-" (report only).
row() {
    awk -v label="$1" -v a="$2" -v b="$3" -v target="$4" -v kind="$5" '
        function num(x) { return x ~ /^-?[0-9.]+$/ }
        BEGIN {
            ratio = "-"; verdict = ""
            if (num(a) && num(b) && b + 0 > 0) {
                r = a / b
                ratio = sprintf("%.2fx", r)
                if (kind == "ge") verdict = (r >= target) ? "met" : "NOT met"
                if (kind == "le") verdict = (r <= target) ? "met" : "NOT met"
            }
            t = kind == "ge" ? ">= " target "x" : kind == "le" ? "<= " target "x" : target
            printf "| %-42s | %12s | %10s | %8s | %-18s |\n", label,
                   a == "" ? "-" : a, b == "" ? "-" : b, ratio,
                   t (verdict == "" ? "" : " " verdict)
        }'
}

echo
echo "== Summary (2 workers; f(x) = x + 1; ratio = mproc / Python)"
printf '| %-42s | %12s | %10s | %8s | %-18s |\n' measurement mproc Python \
    ratio target
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..44})" \
    "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})" \
    "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..20})"
py_putget=$(py putget tasks_per_s)
row "put/get per item, default queue (tasks/s)" \
    "$(mp putget tasks_per_s queue=default)" "$py_putget" 10 ge
row "put/get per item, queue 4096 (tasks/s)" \
    "$(mp putget tasks_per_s queue=4096)" "$py_putget" 10 ge
row "map vs Pool.map (tasks/s)" "$(mp map tasks_per_s)" \
    "$(py map tasks_per_s)" 1 ge
row "round trip vs Pool.apply, median (us)" "$(mp latency median_us)" \
    "$(py latency median_us)" 0.5 le
row "round trip vs Pool.apply, p99 (us)" "$(mp latency p99_us)" \
    "$(py latency p99_us)" report -
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
