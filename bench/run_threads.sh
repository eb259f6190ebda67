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
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
python=${PYTHON:-python3}
cc=${CC:-cc}
py_items=${MPROC_BENCH_PY_ITEMS:-1000000}
items=1000000
rounds=${MPROC_BENCH_ROUNDS:-5}
case "$rounds" in '' | *[!0-9]* | 0)
    echo "run_threads.sh: MPROC_BENCH_ROUNDS must be a positive integer" >&2
    exit 2 ;;
esac

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/mproc-bench-threads.XXXXXX")
trap 'rm -rf "$log_dir"' EXIT

status=0

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

if [ "${MPROC_BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "building ($build) ..."
    if ! make -C "$root" build BUILD_DIR="$build" >"$log_dir/build.log" 2>&1; then
        tail -n 40 "$log_dir/build.log"
        echo "run_threads.sh: the build failed" >&2
        exit 1
    fi
fi
bench=$build/tpool_bench
if [ ! -x "$bench" ]; then
    bench=$(find "$build" -type f -name tpool_bench -perm -u+x 2>/dev/null |
        head -n 1)
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    echo "run_threads.sh: no tpool_bench executable under $build" >&2
    exit 1
fi

glib_bin=$build/glib_threadpool
if [ -z "$glib_skip" ]; then
    # shellcheck disable=SC2046 # pkg-config's flags are meant to split
    if ! "$cc" -O2 -o "$glib_bin" "$here/peers/glib_threadpool.c" \
            $(pkg-config --cflags --libs glib-2.0) >"$log_dir/cc.log" 2>&1; then
        cat "$log_dir/cc.log"
        glib_skip="bench/peers/glib_threadpool.c did not compile"
        status=1
    fi
fi

# --- run ---------------------------------------------------------------------

echo "machine: $(nproc) CPUs, $(uname -sr), $("$python" --version 2>&1)"
echo "mproc:   $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'no commit'), $bench"
if [ -z "$glib_skip" ]; then
    echo "GLib:    $(pkg-config --modversion glib-2.0), $glib_bin"
else
    echo "GLib:    skipped: $glib_skip"
fi
echo

# run LIMIT OUTFILE CMD...: runs CMD with a time limit, appends its lines to
# OUTFILE and shows them.
run() {
    local limit=$1 out=$2 rc=0
    shift 2
    timeout -k 10 "$limit" "$@" >"$log_dir/one.txt" || rc=$?
    cat "$log_dir/one.txt"
    cat "$log_dir/one.txt" >>"$out"
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "run_threads.sh: '$*' timed out after ${limit}s" >&2
        else
            echo "run_threads.sh: '$*' failed (exit $rc)" >&2
        fi
        status=1
    fi
}

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

# field MEASUREMENT KEY MATCH FILE [STAT]: over the lines of FILE that start
# with MEASUREMENT and contain MATCH, the value of KEY=: the median (STAT
# "median", the default; the mean of the two middle values for an even
# count), "min", "max" or "count".  Empty if no line matches.
field() {
    awk -v m="$1" -v k="$2" -v want="$3" -v stat="${5:-median}" '
        $1 == m && index($0, want) {
            for (i = 2; i <= NF; i++) {
                split($i, kv, "=")
                if (kv[1] == k) { n++; v[n] = kv[2] + 0; raw[n] = kv[2]; break }
            }
        }
        END {
            if (n == 0) exit
            for (i = 2; i <= n; i++) {      # insertion sort: n is small
                x = v[i]; xr = raw[i]
                for (j = i - 1; j >= 1 && v[j] > x; j--) {
                    v[j + 1] = v[j]; raw[j + 1] = raw[j]
                }
                v[j + 1] = x; raw[j + 1] = xr
            }
            if (stat == "count") print n
            else if (stat == "min") print raw[1]
            else if (stat == "max") print raw[n]
            else if (n % 2) print raw[(n + 1) / 2]
            else printf "%.0f\n", (v[n / 2] + v[n / 2 + 1]) / 2
        }' "$4"
}

# row LABEL MPROC GLIB_EXCL GLIB_SHARED PYTHON PEER TARGET KIND: the ratio is
# MPROC / GLIB_EXCL when PEER is "glib", MPROC / PYTHON (marked "Py") when it
# is "py".  KIND is "ge" (ratio >= TARGET), "le" (ratio <= TARGET) or "-"
# (report only; TARGET is printed as it is).
row() {
    awk -v label="$1" -v a="$2" -v g="$3" -v s="$4" -v p="$5" -v peer="$6" \
        -v target="$7" -v kind="$8" '
        function num(x) { return x ~ /^-?[0-9.]+$/ }
        function show(x) { return x == "" ? "-" : x }
        BEGIN {
            b = peer == "glib" ? g : p
            ratio = "-"; verdict = ""
            if (num(a) && num(b) && b + 0 > 0) {
                r = a / b
                ratio = sprintf("%.2fx", r) (peer == "py" ? " Py" : "")
                if (kind == "ge") verdict = (r >= target) ? "met" : "NOT met"
                if (kind == "le") verdict = (r <= target) ? "met" : "NOT met"
            } else if (kind != "-") {
                verdict = "no figure"
            }
            t = kind == "ge" ? ">= " target "x" : kind == "le" ? "<= " target "x" : target
            printf "| %-44s | %10s | %10s | %10s | %10s | %8s | %-18s |\n",
                   label, show(a), show(g), show(s), show(p), ratio,
                   t (verdict == "" ? "" : " " verdict)
        }'
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
printf '| %-44s | %10s | %10s | %10s | %10s | %8s | %-18s |\n' measurement \
    mproc "GLib excl" "GLib shrd" Python ratio target
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" \
    "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..12})" \
    "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..12})" \
    "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..20})"
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
