#!/usr/bin/env bash
# scripts/check_consumers.sh BUILD_DIR - programs outside the tree can build
# against an installed mproc and run, with both of its libraries.
#
# Installs BUILD_DIR (already built) into a temporary prefix with
# `cmake --install BUILD_DIR --prefix TMP`, checks what landed there, then
# builds and runs:
#   tests/consumers/cmake/      find_package(mproc 1.0 CONFIG REQUIRED),
#                               linked to mproc::mproc and mproc::mproc_static
#   tests/consumers/pkgconfig/  `pkg-config --cflags --libs mproc`, and
#                               `--static` for the static link
#   tests/consumers/cxx/        a C++ program (the headers declare C
#                               linkage), with pkg-config's flags
# Each program squares numbers on a two-worker pool and checks the results.
# The shared-linked ones must use TMP's libmproc.so.1 (ldd says so), the
# static ones must need no libmproc at all (readelf).  Removes TMP, and
# exits nonzero on the first failure.  Needs pkg-config (scripts/deps.sh
# pkgconfig installs it).
set -euo pipefail
exec </dev/null

[ "$#" -eq 1 ] || {
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
}
build=$(cd "$1" && pwd)
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/mproc-consumers.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

say() { printf 'check_consumers: %s\n' "$*"; }
fail() {
    say "FAILED: $*"
    exit 1
}
# quietly CMD...: runs CMD, showing its output only when it fails.
quietly() {
    "$@" >"$work/log" 2>&1 || {
        sed 's/^/    /' "$work/log"
        fail "$*"
    }
}

[ -f "$build/CMakeCache.txt" ] || fail "$build is not a CMake build tree"
command -v pkg-config >/dev/null 2>&1 ||
    fail "pkg-config not found (bash scripts/deps.sh pkgconfig)"

# --- install and look at what was installed -----------------------------------

quietly cmake --install "$build" --prefix "$prefix"
say "installed $build into $prefix"

find_one() { find "$prefix" -name "$1" -print -quit; }
so=$(find_one libmproc.so.1)
[ -n "$so" ] || fail "no libmproc.so.1 installed"
libdir=$(dirname "$so")
for f in libmproc.so libmproc.a "libmproc.so.$(
    sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")" \
    pkgconfig/mproc.pc cmake/mproc/mprocConfig.cmake \
    cmake/mproc/mprocConfigVersion.cmake cmake/mproc/mprocTargets.cmake; do
    [ -e "$libdir/$f" ] || fail "not installed: $libdir/$f"
done
[ "$(readlink "$libdir/libmproc.so")" = libmproc.so.1 ] ||
    fail "libmproc.so is not a link to libmproc.so.1"
readelf -d "$so" | grep -q 'Library soname: \[libmproc.so.1\]' ||
    fail "the soname of $so is not libmproc.so.1"
incdir=$prefix/include
for h in mproc.h mproc/common.h mproc/version.h mproc/pool.h; do
    [ -e "$incdir/$h" ] || fail "not installed: $incdir/$h"
done
say "ok: libraries, headers, mproc.pc and the CMake package are installed"

# SameMajorVersion: 1.x is found for a request of 1.0, not of 2.0 or 0.9.
cat >"$work/version.cmake" <<'EOF'
set(PACKAGE_FIND_VERSION ${want})
string(REPLACE "." ";" _parts "${want}")
list(GET _parts 0 PACKAGE_FIND_VERSION_MAJOR)
list(GET _parts 1 PACKAGE_FIND_VERSION_MINOR)
set(PACKAGE_FIND_VERSION_PATCH 0)
set(PACKAGE_FIND_VERSION_COUNT 2)
set(CMAKE_SIZEOF_VOID_P 8)
include(${file})
message("${PACKAGE_VERSION_COMPATIBLE}")
EOF
for want in 1.0:TRUE 2.0:FALSE 0.9:FALSE; do
    got=$(cmake -Dwant="${want%:*}" \
        -Dfile="$libdir/cmake/mproc/mprocConfigVersion.cmake" \
        -P "$work/version.cmake" 2>&1)
    [ "$got" = "${want#*:}" ] ||
        fail "mprocConfigVersion.cmake: a request for ${want%:*} gives" \
            "compatible=$got, want ${want#*:}"
done

# --- run PROGRAM: the shared one on TMP's libmproc.so.1, the static one alone -

run_shared() {
    local prog=$1
    LD_LIBRARY_PATH=$libdir ldd "$prog" >"$work/ldd" 2>&1 || true
    grep -q "libmproc.so.1 => $libdir/libmproc.so.1 " "$work/ldd" || {
        sed 's/^/    /' "$work/ldd"
        fail "$prog does not use $libdir/libmproc.so.1"
    }
    LD_LIBRARY_PATH=$libdir quietly timeout 60 "$prog"
    sed 's/^/    /' "$work/log"
    say "ok: $prog (libmproc.so.1)"
}

run_static() {
    local prog=$1
    if readelf -d "$prog" | grep -q 'NEEDED.*libmproc'; then
        fail "$prog, linked statically, needs a libmproc.so"
    fi
    nm "$prog" | grep -q ' T mproc_version_string$' ||
        fail "$prog has no mproc_version_string of its own"
    quietly timeout 60 "$prog"
    sed 's/^/    /' "$work/log"
    say "ok: $prog (libmproc.a)"
}

# --- find_package(mproc) ------------------------------------------------------

say "CMake consumer: find_package(mproc 1.0 CONFIG REQUIRED)"
quietly cmake -S "$top/tests/consumers/cmake" -B "$work/cmake" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
found=$(sed -n 's/^mproc_DIR:PATH=//p' "$work/cmake/CMakeCache.txt")
[ "$found" = "$libdir/cmake/mproc" ] ||
    fail "find_package found mproc in '$found', not in $libdir/cmake/mproc"
quietly cmake --build "$work/cmake" -j 2
run_shared "$work/cmake/squares"
run_static "$work/cmake/squares_static"

# --- pkg-config ---------------------------------------------------------------

say "pkg-config consumer: pkg-config --cflags --libs [--static] mproc"
export PKG_CONFIG_PATH=$libdir/pkgconfig
[ "$(pkg-config --variable=prefix mproc)" = "$prefix" ] ||
    fail "pkg-config finds an mproc.pc outside $prefix"
[ "$(pkg-config --modversion mproc)" = "$(sed -n \
    's/^#define MPROC_VERSION_STRING "\(.*\)"$/\1/p' \
    "$incdir/mproc/version.h")" ] ||
    fail "mproc.pc's version is not version.h's MPROC_VERSION_STRING"
pkg-config --static --libs mproc | grep -q -- '-pthread' ||
    fail "pkg-config --static --libs mproc lacks -pthread"
mkdir -p "$work/pc"
quietly make -C "$top/tests/consumers/pkgconfig" OUT="$work/pc"
run_shared "$work/pc/squares"
run_static "$work/pc/squares_static"

say "C++ consumer: g++ with pkg-config --cflags --libs mproc"
# shellcheck disable=SC2046 # the flags are words
quietly g++ -std=c++11 -Wall -Wextra -Werror -pedantic \
    $(pkg-config --cflags mproc) "$top/tests/consumers/cxx/squares.cpp" \
    -o "$work/squares_cxx" $(pkg-config --libs mproc)
run_shared "$work/squares_cxx"

say "passed"
