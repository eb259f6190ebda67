#!/usr/bin/env bash
# bench/run_state.sh - mproc's shared state and context benchmark and its
# peers, side by side: Redis (set + get round trips over its Unix socket), a
# pipe ping-pong (the floor for the watch latency) and Python's
# multiprocessing.Pool(2).map (for mproc_ctx_map).
#
# Installs redis-server with apt-get when it is missing (only as root;
# otherwise the Redis rows are skipped, and the run says so), builds mproc
# if needed (`make build` at the repo root), starts a private redis-server
# (no TCP port, a Unix socket in a temporary directory, no persistence),
# runs build/state_bench and bench/peer_map.py in interleaved rounds, stops
# Redis, and prints the raw lines and a table of medians:
# measurement | mproc | peer | ratio | target.
#
# Works from any directory and without stdin.  About 1.5 minutes with the
# default 5 rounds (plus the install and the build the first time).
#
# Environment:
#   MPROC_BENCH_ROUNDS        rounds (default 5; the table shows medians)
#   MPROC_BENCH_PAIRS         set+get pairs per setget run (default 50000)
#   MPROC_BENCH_NO_BUILD=1    use the existing build tree as it is
#   MPROC_BENCH_NO_INSTALL=1  never run apt-get (Redis rows are skipped if
#                             redis-server is missing)
#   MPROC_BENCH_PIN           a CPU list for taskset (e.g. 0): run Redis and
#                             the set+get and watch measurements pinned to
#                             it (the map rows are never pinned)
#   BUILD_DIR                 the build tree (default: <repo>/build)
#   PYTHON                    the Python for the peer (default: python3)
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
rounds=${MPROC_BENCH_ROUNDS:-5}
pairs=${MPROC_BENCH_PAIRS:-50000}
pin=${MPROC_BENCH_PIN:-}
pinned=() # the command prefix of the pinned runs
if [ -n "$pin" ]; then
    pinned=(taskset -c "$pin")
fi
for v in "$rounds" "$pairs"; do
    case "$v" in '' | *[!0-9]* | 0)
        echo "run_state.sh: MPROC_BENCH_ROUNDS and MPROC_BENCH_PAIRS must be" \
            "positive integers" >&2
        exit 2 ;;
    esac
done

make_log_dir mproc-bench-state
redis_pid=""
stop_redis() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    fi
}
trap 'stop_redis; rm -rf "$log_dir"' EXIT

# --- Redis -------------------------------------------------------------------

redis_skip="" # why the Redis rows are skipped; empty when they run
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "${MPROC_BENCH_NO_INSTALL:-0}" = 1 ]; then
        redis_skip="redis-server is not installed and MPROC_BENCH_NO_INSTALL=1"
    elif [ "$(id -u)" -ne 0 ]; then
        redis_skip="redis-server is not installed and this is not root (run: apt-get install redis-server)"
    elif ! command -v apt-get >/dev/null 2>&1; then
        redis_skip="redis-server is not installed and there is no apt-get"
    else
        echo "installing redis-server with apt-get ..."
        if DEBIAN_FRONTEND=noninteractive apt-get update \
                >"$log_dir/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y \
                redis-server >>"$log_dir/apt.log" 2>&1 &&
            command -v redis-server >/dev/null 2>&1; then
            echo "installed $(redis-server --version | cut -d' ' -f1-3)"
        else
            tail -n 20 "$log_dir/apt.log"
            redis_skip="apt-get could not install redis-server"
        fi
    fi
fi

# --- build -------------------------------------------------------------------

build_bench state_bench

# --- start Redis ---------------------------------------------------------------

sock=$log_dir/redis.sock
if [ -z "$redis_skip" ]; then
    # --port 0: no TCP listener; the Unix socket only, no persistence.
    "${pinned[@]}" redis-server --port 0 --unixsocket "$sock" \
        --unixsocketperm 700 \
        --save '' --appendonly no --dir "$log_dir" \
        >"$log_dir/redis.log" 2>&1 &
    redis_pid=$!
    # Wait for it (up to 10 s): the socket exists and answers PING.
    for ((i = 0; i < 100; i++)); do
        if [ -S "$sock" ] && { ! command -v redis-cli >/dev/null 2>&1 ||
            [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ]; }; then
            break
        fi
        if ! kill -0 "$redis_pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    if [ ! -S "$sock" ] || ! kill -0 "$redis_pid" 2>/dev/null; then
        tail -n 20 "$log_dir/redis.log"
        redis_skip="redis-server did not start"
        redis_pid=""
        status=1
    fi
fi

# --- run ---------------------------------------------------------------------

machine_lines "$("$python" --version 2>&1)"
if [ -z "$redis_skip" ]; then
    echo "Redis:   $(redis-server --version | cut -d' ' -f3), $sock"
else
    echo "Redis:   skipped: $redis_skip"
fi
if [ -n "$pin" ]; then
    echo "pinned:  CPU $pin (taskset): Redis, set+get and watch; map is not"
fi
echo

mp=$log_dir/mproc.txt rd=$log_dir/redis.txt py=$log_dir/py.txt
: >"$mp"
: >"$rd"
: >"$py"

# Interleaved round by round so that mproc and its peers see the same
# machine; the table shows the median of the rounds.
echo "== $rounds interleaved rounds: state_bench, Redis, peer_map.py"
for ((r = 1; r <= rounds; r++)); do
    run 120 "$mp" "${pinned[@]}" "$bench" --mode setget --impl mproc \
        --pairs "$pairs"
    if [ -z "$redis_skip" ]; then
        run 120 "$rd" "${pinned[@]}" "$bench" --mode setget --impl redis \
            --pairs "$pairs" --redis-sock "$sock"
    fi
    run 60 "$mp" "${pinned[@]}" "$bench" --mode watch --samples 2000 \
        --warmup 200
    for n in 200000 1000000; do
        run 120 "$mp" "$bench" --mode map --items "$n" --workers 2
        run 120 "$py" "$python" "$here/peer_map.py" --items "$n" --workers 2
    done
done
stop_redis

# --- table -------------------------------------------------------------------

fmt='| %-40s | %10s | %10s | %-16s | %8s | %-16s |\n'
# row LABEL MPROC PEER PEERNAME TARGET KIND: the ratio is MPROC / PEER.
# KIND is "ge" (ratio >= TARGET), "le" (ratio <= TARGET) or "-" (report
# only; TARGET is printed as it is).
row() {
    ratio_cells "$2" "$3" "$5" "$6" "" "no figure"
    # shellcheck disable=SC2059 # one format for every row
    printf "$fmt" "$1" "${2:--}" "${3:--}" "$4" "$cell_ratio" "$cell_target"
}
m() { field "$1" "$2" "${3:-}" "$mp" "${4:-}"; }
d() { field "$1" "$2" "${3:-}" "$rd" "${4:-}"; }
p() { field "$1" "$2" "${3:-}" "$py" "${4:-}"; }

echo
pin_note=""
[ -z "$pin" ] || pin_note="; set+get and watch pinned to CPU $pin"
echo "== Summary (median of $rounds rounds; ratio = mproc / peer$pin_note)"
table_head "$fmt" measurement mproc peer "peer is" ratio target
row "set+get pairs, 16-byte value (pairs/s)" \
    "$(m setget pairs_per_s impl=mproc)" "$(d setget pairs_per_s)" \
    "Redis SET+GET" 1 ge
row "watch wake-up latency, p50 (us)" "$(m watch p50_us)" \
    "$(m pipe p50_us)" "pipe round trip" 2 le
row "watch wake-up latency, p99 (us)" "$(m watch p99_us)" \
    "$(m pipe p99_us)" "pipe round trip" report -
for n in 200000 1000000; do
    row "process_map x+1, $n items (tasks/s)" \
        "$(m map tasks_per_s "items=$n ")" \
        "$(p map tasks_per_s "impl=Pool.map items=$n ")" "Pool(2).map" 1 ge
    row "  same, Pool started inside the clock" \
        "$(m map tasks_per_s "items=$n ")" \
        "$(p map tasks_per_s "impl=Pool.map_cold items=$n ")" \
        "Pool.map cold" report -
done
echo
# range LABEL GETTER ARGS...: "LABEL min..max" over the rounds
range() {
    local label=$1 lo hi
    shift
    lo=$("$@" min) hi=$("$@" max)
    [ -n "$lo" ] && printf '  %-36s %s .. %s\n' "$label" "$lo" "$hi"
    return 0
}
echo "spread over the rounds (min .. max):"
range "mproc set+get (pairs/s)" m setget pairs_per_s impl=mproc
range "Redis SET+GET (pairs/s)" d setget pairs_per_s ""
range "watch p50 (us)" m watch p50_us ""
range "pipe round trip p50 (us)" m pipe p50_us ""
range "mproc map 200000 (tasks/s)" m map tasks_per_s "items=200000 "
range "Pool.map 200000 (tasks/s)" p map tasks_per_s "impl=Pool.map items=200000 "
range "mproc map 1000000 (tasks/s)" m map tasks_per_s "items=1000000 "
range "Pool.map 1000000 (tasks/s)" p map tasks_per_s "impl=Pool.map items=1000000 "
echo
# per_round LABEL FILE_A MATCH_A FILE_B MATCH_B MEASUREMENT KEY: the ratio
# A / B of KEY round by round (the n-th matching line of A over the n-th of
# B: both ran in the same round), then their median; FILE_B "-": KEY of A
# is a ratio already.  On a machine whose speed drifts, this pairs figures
# taken under the same conditions.
per_round() {
    local files=("$2" "$4")
    [ "$4" = - ] && files=("$2")
    awk -v m="$6" -v k="$7" -v wa="$3" -v wb="$5" -v label="$1" \
        -v nodiv="$([ "$4" = - ] && echo 1 || echo 0)" '
        function val(line,   i, n, f, kv) {
            n = split(line, f, " ")
            for (i = 2; i <= n; i++) {
                split(f[i], kv, "=")
                if (kv[1] == k) return kv[2] + 0
            }
            return -1
        }
        FNR == 1 { file++ }
        $1 == m && file == 1 && index($0, wa) { a[++na] = val($0) }
        $1 == m && file == 2 && index($0, wb) { b[++nb] = val($0) }
        END {
            if (nodiv) { for (i = 1; i <= na; i++) b[i] = 1; nb = na }
            n = na < nb ? na : nb
            if (n == 0) exit
            out = ""
            for (i = 1; i <= n; i++) {
                r[i] = b[i] > 0 ? a[i] / b[i] : 0
                out = out sprintf(" %.2f", r[i])
            }
            for (i = 2; i <= n; i++) {
                x = r[i]
                for (j = i - 1; j >= 1 && r[j] > x; j--) r[j + 1] = r[j]
                r[j + 1] = x
            }
            med = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
            printf "  %-36s%s  (median %.2fx)\n", label, out, med
        }' "${files[@]}"
}
echo "ratio round by round (mproc / peer):"
per_round "set+get vs Redis" "$mp" impl=mproc "$rd" "" setget pairs_per_s
per_round "watch p50 vs pipe p50" "$mp" "" - "" watch_vs_pipe p50_ratio
per_round "map 200000 vs Pool.map" "$mp" "items=200000 " "$py" \
    "impl=Pool.map items=200000 " map tasks_per_s
per_round "map 1000000 vs Pool.map" "$mp" "items=1000000 " "$py" \
    "impl=Pool.map items=1000000 " map tasks_per_s
echo
echo "The watch latency is one-way, writer -> state server -> waiter (two"
echo "hops), measured against a pipe round trip between the same two"
echo "processes (two hops, no server).  Pool.map runs on a pool started"
echo "before the clock; mproc_ctx_map starts its workers inside the call, so"
echo "the cold line is the like-for-like one.  See bench/README.md."
if [ -n "$redis_skip" ]; then
    echo "Redis rows skipped: $redis_skip"
fi
exit "$status"
