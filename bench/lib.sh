# bench/lib.sh - shell functions shared by bench/run.sh, bench/run_group.sh
# and bench/run_threads.sh.  Sourced, not run: each script sets `here` (its
# own directory) first, then `. "$here/lib.sh"`.
#
# Sets, from the environment:
#   prog    the sourcing script's name, for messages ("run.sh")
#   root    the repo root; build: the build tree (BUILD_DIR, default
#           <repo>/build; relative to the repo root)
#   python  the Python for the peers (PYTHON, default python3)
#   status  0; run sets it to 1 when a command fails
#
# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154 # variables for the scripts; `here` is theirs

prog=$(basename "${BASH_SOURCE[1]:-$0}")
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
python=${PYTHON:-python3}
status=0

# make_log_dir NAME: a fresh temporary directory NAME.XXXXXX in log_dir,
# removed on exit.
make_log_dir() {
    log_dir=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap 'rm -rf "$log_dir"' EXIT
}

# build_bench NAME: builds (`make build` at the repo root) unless
# MPROC_BENCH_NO_BUILD=1, then sets bench to the NAME executable of the build
# tree.  Exits 1 if the build fails or there is no such executable.
build_bench() {
    if [ "${MPROC_BENCH_NO_BUILD:-0}" != 1 ]; then
        echo "building ($build) ..."
        if ! make -C "$root" build BUILD_DIR="$build" >"$log_dir/build.log" 2>&1; then
            tail -n 40 "$log_dir/build.log"
            echo "$prog: the build failed" >&2
            exit 1
        fi
    fi
    bench=$build/$1
    if [ ! -x "$bench" ]; then
        bench=$(find "$build" -type f -name "$1" -perm -u+x 2>/dev/null |
            head -n 1)
    fi
    if [ -z "$bench" ] || [ ! -x "$bench" ]; then
        echo "$prog: no $1 executable under $build" >&2
        exit 1
    fi
}

# machine_lines [EXTRA]: the "machine:" line (EXTRA, e.g. the Python version,
# after a comma) and the "mproc:" line (commit and $bench).
machine_lines() {
    local extra=""
    [ "$#" -eq 0 ] || extra=", $1"
    echo "machine: $(nproc) CPUs, $(uname -sr)$extra"
    echo "mproc:   $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'no commit'), $bench"
}

# run LIMIT OUTFILE CMD...: runs CMD with a time limit, appends its lines to
# OUTFILE and shows them.  A failure or a timeout is reported and sets
# status=1.
run() {
    local limit=$1 out=$2 rc=0
    shift 2
    timeout -k 10 "$limit" "$@" >"$log_dir/one.txt" || rc=$?
    cat "$log_dir/one.txt"
    cat "$log_dir/one.txt" >>"$out"
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "$prog: '$*' timed out after ${limit}s" >&2
        else
            echo "$prog: '$*' failed (exit $rc)" >&2
        fi
        status=1
    fi
}

# field MEASUREMENT KEY MATCH FILE [STAT]: over the lines of FILE that start
# with MEASUREMENT and contain MATCH, the value of KEY=: the median (STAT
# "median", the default; the mean of the two middle values for an even
# count), "first" (the first such line's), "min", "max" or "count".  Empty if
# no line matches.
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
            if (stat == "first") { print raw[1]; exit }
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

# table_head FORMAT NAME...: a table's header, NAMEs printed with FORMAT (the
# printf format of its rows, e.g. '| %-42s | %12s |\n'), then its rule: a run
# of dashes two wider than each %Ns column.
table_head() {
    local fmt=$1 rule="|" w
    shift
    # shellcheck disable=SC2059 # the format is the point
    printf "$fmt" "$@"
    for w in $(grep -o '%-\{0,1\}[0-9]*s' <<<"$fmt" | tr -d '%s-'); do
        rule+=$(printf -- '-%.0s' $(seq 1 $((w + 2))))"|"
    done
    echo "$rule"
}

# ratio_cells A B TARGET KIND [MARK [MISSING]]: sets cell_ratio to A / B
# ("%.2fx", then MARK) when both are numbers and B > 0, else "-", and
# cell_target to the target: KIND "ge" (">= TARGETx", met when the ratio is
# at least TARGET), "le" ("<= TARGETx", met when at most) or "-" (TARGET as
# it is, no verdict).  MISSING: the verdict of a ge/le target without a
# ratio (default: none).
ratio_cells() {
    local out
    out=$(awk -v a="$1" -v b="$2" -v target="$3" -v kind="$4" \
        -v mark="${5:-}" -v missing="${6:-}" '
        function num(x) { return x ~ /^-?[0-9.]+$/ }
        BEGIN {
            ratio = "-"; verdict = ""
            if (num(a) && num(b) && b + 0 > 0) {
                r = a / b
                ratio = sprintf("%.2fx", r) mark
                if (kind == "ge") verdict = (r >= target) ? "met" : "NOT met"
                if (kind == "le") verdict = (r <= target) ? "met" : "NOT met"
            } else if (kind != "-") {
                verdict = missing
            }
            t = kind == "ge" ? ">= " target "x" : kind == "le" ? "<= " target "x" : target
            print ratio
            print t (verdict == "" ? "" : " " verdict)
        }')
    cell_ratio=${out%%$'\n'*}
    cell_target=${out#*$'\n'}
}
