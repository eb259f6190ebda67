#!/usr/bin/env bash
# scripts/check_abi_growth.sh - options structs can grow without breaking
# programs already built (include/mproc/common.h, "Options").
#
# Builds and installs this tree's shared library ("1.0"), and a copy of it
# whose mproc_pool_opts and mproc_tpool_opts gained a field at the end
# ("1.1"), each into its own prefix.  Then tests/consumers/abi/grow.c:
#   - built against 1.0, run against 1.1: an old program on a new library
#     works (the library reads the shorter struct, the new field defaults);
#   - built against 1.1 with the new field 0, run against 1.0: works;
#   - the same with the new field set: refused with -ENOTSUP (exit 3), never
#     silently ignored.
# Exits nonzero if any of them does not behave so.  About a minute.
set -euo pipefail
exec </dev/null

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/mproc-abi.XXXXXX)
trap 'rm -rf "$work"' EXIT
say() { printf 'check_abi_growth: %s\n' "$*"; }
fail() {
    say "FAILED: $*"
    exit 1
}

# The tracked files as they are in the working tree.
copy_tree() {
    mkdir -p "$1"
    (cd "$top" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 cp --parents -t "$1" 2>/dev/null) || true
}

# build_install SRC PREFIX: the library alone, installed into PREFIX.
build_install() {
    cmake -S "$1" -B "$1/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF \
        -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_MAN=OFF >"$work/log" 2>&1 ||
        { cat "$work/log"; fail "configure $1"; }
    cmake --build "$1/build" -j 2 >"$work/log" 2>&1 ||
        { cat "$work/log"; fail "build $1"; }
    cmake --install "$1/build" --prefix "$2" >"$work/log" 2>&1 ||
        { cat "$work/log"; fail "install $1"; }
}

# grow STRUCT HEADER: appends `int64_t grown_option;` to STRUCT in HEADER.
# Eight bytes, so it starts at or past the old struct's size (its tail
# padding included): the rule for a field added in 1.x (common.h,
# "Options"), without which an older library would not see it.
grow() {
    python3 - "$1" "$2" <<'PY'
import sys
name, path = sys.argv[1], sys.argv[2]
s = open(path).read()
end = "} %s;" % name
assert end in s, end
s = s.replace(end, "    int64_t grown_option; /* check_abi_growth.sh */\n" + end)
open(path, "w").write(s)
PY
}

say "building 1.0 (this tree) and 1.1 (two options structs grown)"
copy_tree "$work/src10"
copy_tree "$work/src11"
grow mproc_pool_opts "$work/src11/include/mproc/pool.h"
grow mproc_tpool_opts "$work/src11/include/mproc/tpool.h"
build_install "$work/src10" "$work/v10"
build_install "$work/src11" "$work/v11"

libdir() { dirname "$(find "$1" -name 'libmproc.so.1' | head -n 1)"; }
lib10=$(libdir "$work/v10")
lib11=$(libdir "$work/v11")
[ -n "$lib10" ] && [ -n "$lib11" ] || fail "no libmproc.so.1 installed"

consumer="$top/tests/consumers/abi/grow.c"
cc -std=c11 -O1 -Wall -I"$work/v10/include" "$consumer" -o "$work/old" \
    -L"$lib10" -lmproc -pthread || fail "building the 1.0 program"
cc -std=c11 -O1 -Wall -DGROWN -I"$work/v11/include" "$consumer" \
    -o "$work/new" -L"$lib11" -lmproc -pthread ||
    fail "building the 1.1 program"

# run NAME WANT_STATUS LIBDIR PROGRAM [ARG]
run() {
    local name=$1 want=$2 lib=$3 rc=0
    shift 3
    LD_LIBRARY_PATH=$lib timeout 60 "$@" >"$work/out" 2>&1 || rc=$?
    sed 's/^/    /' "$work/out"
    if [ "$rc" -ne "$want" ]; then
        fail "$name: exit status $rc, want $want"
    fi
    # The program really ran on the library named, not another one.
    LD_LIBRARY_PATH=$lib ldd "$1" | grep -q "$lib/libmproc.so.1" ||
        fail "$name: not linked against $lib/libmproc.so.1"
    say "ok: $name"
}

size_of() { LD_LIBRARY_PATH=$1 "$2" 0 | sed -n 's/^sizeof(mproc_pool_opts) \([0-9]*\).*/\1/p'; }
s10=$(size_of "$lib10" "$work/old")
s11=$(size_of "$lib11" "$work/new")
[ -n "$s10" ] && [ -n "$s11" ] && [ "$s11" -gt "$s10" ] ||
    fail "the grown struct is not larger ($s10 -> $s11 bytes)"
say "mproc_pool_opts: $s10 bytes in 1.0, $s11 in 1.1"

run "1.0 program on the 1.0 library" 0 "$lib10" "$work/old"
run "1.0 program on the 1.1 library" 0 "$lib11" "$work/old"
run "1.1 program, new field 0, on the 1.0 library" 0 "$lib10" "$work/new" 0
run "1.1 program, new field set, on the 1.1 library" 0 "$lib11" "$work/new" 1
run "1.1 program, new field set, on the 1.0 library (-ENOTSUP)" 3 "$lib10" \
    "$work/new" 1
say "passed"
