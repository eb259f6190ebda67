#!/usr/bin/env bash
# bench/run_threads.sh - mproc's thread pool benchmark and its peers, side by
# side: GLib's GThreadPool (exclusive and shared) and Python's
# concurrent.futures.ThreadPoolExecutor.
#
# Installs libglib2.0-dev with apt-get when pkg-config cannot find glib-2.0
# (only as root; otherwise the GLib rows are skipped, and the run says so),
# builds mproc if needed (`make build` at the repo root), compiles
# bench/peers/glib_threadpool.c into the build tree, runs build/tpool_bench,
# the GLib peer and bench/peer_threads.py one after the other on the same
# workload (no-op tasks, 2 threads), then prints the raw lines and a table:
# measurement | mproc | GLib exclusive | GLib shared | Python | ratio | target
# (thread pool throughput target: mproc >= 1.5x GLib exclusive).
#
# Works from any directory and without stdin.  About 1-2 minutes (plus the
# GLib install and the build the first time).
#
# Environment:
#   MPROC_BENCH_NO_BUILD=1    use the existing build tree as it is
#   MPROC_BENCH_NO_INSTALL=1  never run apt-get (GLib rows are skipped if
#                             GLib is missing)
#   MPROC_BENCH_ROUNDS        rounds of the mproc and GLib throughput runs
#                             (default 5; the table shows medians)
#   MPROC_BENCH_PY_ITEMS      tasks for Python's throughput run (default
#                             1000000, ~25 s and ~1.8 GB; fewer is noted in
#                             Python's line)
#   BUILD_DIR                 the build tree (default: <repo>/build)
#   PYTHON                    the Python for the peer (default: python3)
#   CC                        the compiler for the GLib peer (default: cc)
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
cc=${CC:-cc}
py_items=${MPROC_BENCH_PY_ITEMS:-1000000}
items=1000000
rounds=${MPROC_BENCH_ROUNDS:-5}
case "$rounds" in '' | *[!0-9]* | 0)
    echo "run_threads.sh: MPROC_BENCH_ROUNDS must be a positive integer" >&2
    exit 2 ;;
esac

make_log_dir mproc-bench-threads

# --- GLib --------------------------------------------------------------------

have_glib() {
    command -v pkg-config >/dev/null 2>&1 && pkg-config --exists glib-2.0
}

glib_skip=""  # why the GLib rows are skipped; empty when they run
if ! have_glib; then
    if [ "${MPROC_BENCH_NO_INSTALL:-0}" = 1 ]; then
        glib_skip="GLib is not installed and MPROC_BENCH_NO_INSTALL=1"
    elif [ "$(id -u)" -ne 0 ]; then
        glib_skip="GLib is not installed and this is not root (run: apt-get install libglib2.0-dev pkg-config)"
    elif ! command -v apt-get >/dev/null 2>&1; then
        glib_skip="GLib is not installed and there is no apt-get"
    else
        echo "installing libglib2.0-dev and pkg-config with apt-get ..."
        if DEBIAN_FRONTEND=noninteractive apt-get update \
                >"$log_dir/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y \
                libglib2.0-dev pkg-config >>"$log_dir/apt.log" 2>&1 &&
            have_glib; then
            echo "installed GLib $(pkg-config --modversion glib-2.0)"
        else
            tail -n 20 "$log_dir/apt.log"
            glib_skip="apt-get could not install libglib2.0-dev"
        fi
    fi
fi

# --- build -------------------------------------------------------------------

build_bench tpool_bench

glib_bin=$build/glib_threadpool
if [ -z "$glib_skip" ]; then
    # -I"$here": the peer includes bench/bench_util.h.
    # shellcheck disable=SC2046 # pkg-config's flags are meant to split
    if ! "$cc" -O2 -I"$here" -o "$glib_bin" "$here/peers/glib_threadpool.c" \
            $(pkg-config --cflags --libs glib-2.0) >"$log_dir/cc.log" 2>&1; then
        cat "$log_dir/cc.log"
        glib_skip="bench/peers/glib_threadpool.c did not compile"
        status=1
    fi
fi

# --- run ---------------------------------------------------------------------

machine_lines "$("$python" --version 2>&1)"
if [ -z "$glib_skip" ]; then
    echo "GLib:    $(pkg-config --modversion glib-2.0), $glib_bin"
else
    echo "GLib:    skipped: $glib_skip"
fi
echo

# Each measurement runs in a process of its own, so that memory freed by one
# run cannot hide the growth measured by the next.
mp=$log_dir/mproc.txt gl=$log_dir/glib.txt py=$log_dir/py.txt
: >"$mp"
: >"$gl"
: >"$py"

# Throughput figures on these machines are noisy and at times bimodal (a
# pool whose threads keep up with the producer sleeps and wakes per task;
# one that falls behind never sleeps), so the throughput runs are repeated,
# interleaved round by round so that mproc and GLib see the same machine,
# and the table shows medians.
echo "== throughput, $rounds interleaved rounds: tpool_bench and the GLib peer"
for ((r = 1; r <= rounds; r++)); do
    run 60 "$mp" "$bench" --mode throughput --items "$items"
    if [ -z "$glib_skip" ]; then
        run 60 "$gl" "$glib_bin" --mode exclusive --items "$items"
        run 60 "$gl" "$glib_bin" --mode shared --items "$items"
    fi
    run 60 "$mp" "$bench" --mode throughput_tasks --items "$items"
done
echo
echo "== mproc: tpool_bench, latency and memory"
run 60 "$mp" "$bench" --mode latency --samples 20000 --warmup 1000
run 60 "$mp" "$bench" --mode latency --samples 5000 --warmup 100 --gap-us 1000
run 60 "$mp" "$bench" --mode memory --memory-items "$items"
run 60 "$mp" "$bench" --mode memory_ff --memory-items "$items"
echo
if [ -z "$glib_skip" ]; then
    echo "== GLib peer: bench/peers/glib_threadpool.c, memory"
    run 60 "$gl" "$glib_bin" --mode memory --memory-items "$items"
else
    echo "== GLib peer: skipped: $glib_skip"
fi
echo
echo "== Python peer: bench/peer_threads.py"
run 150 "$py" "$python" "$here/peer_threads.py" --mode throughput \
    --items "$py_items"
run 60 "$py" "$python" "$here/peer_threads.py" --mode latency \
    --samples 20000 --warmup 1000
run 60 "$py" "$python" "$here/peer_threads.py" --mode latency \
    --samples 5000 --warmup 100 --gap-us 1000
run 60 "$py" "$python" "$here/peer_threads.py" --mode memory \
    --memory-items 200000

# --- table -------------------------------------------------------------------

fmt='| %-44s | %10s | %10s | %10s | %10s | %8s | %-18s |\n'
# row LABEL MPROC GLIB_EXCL GLIB_SHARED PYTHON PEER TARGET KIND: the ratio is
# MPROC / GLIB_EXCL when PEER is "glib", MPROC / PYTHON (marked "Py") when it
# is "py".  KIND is "ge" (ratio >= TARGET), "le" (ratio <= TARGET) or "-"
# (report only; TARGET is printed as it is).
row() {
    local b=$5 mark=""
    if [ "$6" = glib ]; then
        b=$3
    elif [ "$6" = py ]; then
        mark=" Py"
    fi
    ratio_cells "$2" "$b" "$7" "$8" "$mark" "no figure"
    # shellcheck disable=SC2059 # one format for every row
    printf "$fmt" "$1" "${2:--}" "${3:--}" "${4:--}" "${5:--}" "$cell_ratio" \
        "$cell_target"
}

m() { field "$1" "$2" "${3:-}" "$mp" "${4:-}"; }
g() { field "$1" "$2" "${3:-}" "$gl" "${4:-}"; }
p() { field "$1" "$2" "${3:-}" "$py" "${4:-}"; }

py_n=$(p throughput_tasks items)
py_label="throughput, a handle per task (tasks/s)"
if [ -n "$py_n" ] && [ "$py_n" != "$items" ]; then
    py_label="throughput, handles (tasks/s) [Py: $py_n]"
fi
# latency lines: back to back (gap_us=0) or after 1 ms idle (gap_us=1000)
l0="gap_us=0 " l1="gap_us=1000 "

echo
echo "== Summary (2 threads, no-op tasks, $items per throughput run;" \
    "throughput: median of $rounds rounds)"
table_head "$fmt" measurement mproc "GLib excl" "GLib shrd" Python ratio \
    target
row "throughput, fire-and-forget (tasks/s)" \
    "$(m throughput tasks_per_s)" \
    "$(g throughput tasks_per_s impl=glib_exclusive)" \
    "$(g throughput tasks_per_s impl=glib_shared)" "" glib 1.5 ge
row "$py_label" \
    "$(m throughput_tasks tasks_per_s)" \
    "$(g throughput tasks_per_s impl=glib_exclusive)" \
    "$(g throughput tasks_per_s impl=glib_shared)" \
    "$(p throughput_tasks tasks_per_s)" glib report -
row "submit-to-start latency, p50 (us)" "$(m latency p50_us "$l0")" "" "" \
    "$(p latency p50_us "$l0")" py report -
row "submit-to-start latency, p99 (us)" "$(m latency p99_us "$l0")" "" "" \
    "$(p latency p99_us "$l0")" py report -
row "same after 1 ms idle, p50 (us)" "$(m latency p50_us "$l1")" "" "" \
    "$(p latency p50_us "$l1")" py report -
row "same after 1 ms idle, p99 (us)" "$(m latency p99_us "$l1")" "" "" \
    "$(p latency p99_us "$l1")" py report -
row "memory per pending task, with handle (B)" \
    "$(m memory bytes_per_task handles=1)" "" "" \
    "$(p memory bytes_per_task handles=1)" py report -
row "memory per pending task, no handle (B)" \
    "$(m memory bytes_per_task handles=0)" \
    "$(g memory bytes_per_task)" "" "" glib report -
echo
# range LABEL GETTER ARGS...: "LABEL min..max" over the rounds
range() {
    local label=$1 lo hi
    shift
    lo=$("$@" min) hi=$("$@" max)
    [ -n "$lo" ] && printf '  %-34s %s .. %s\n' "$label" "$lo" "$hi"
    return 0
}
echo "throughput spread over the rounds (tasks/s, min .. max):"
range "mproc fire-and-forget" m throughput tasks_per_s ""
range "mproc, a handle per task" m throughput_tasks tasks_per_s ""
range "GLib exclusive" g throughput tasks_per_s impl=glib_exclusive
range "GLib shared" g throughput tasks_per_s impl=glib_shared
echo
echo "ratio: mproc / GLib exclusive; marked Py: mproc / Python (latency and"
echo "memory with handles; lower is better there).  GThreadPool has no"
echo "per-task handle, so the fire-and-forget line is the like-for-like one and"
echo "carries the target; Python's submit always makes a Future, so its figure"
echo "sits on the handle line.  See bench/README.md for what each line measures."
if [ -n "$glib_skip" ]; then
    echo "GLib rows skipped: $glib_skip"
fi
exit "$status"
