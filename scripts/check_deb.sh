#!/usr/bin/env bash
# scripts/check_deb.sh - install the packages scripts/deb.sh put in
# build-deb/, use them as a program outside this tree would, and purge them.
#
# As root: `apt-get install ./build-deb/*.deb`, then the programs outside
# the tree that scripts/check_consumers.sh builds against a temporary install
# (2-worker pools squaring numbers) are built from the installed files
#   - tests/consumers/pkgconfig/squares.c with `pkg-config --cflags --libs
#     mproc`, and
#   - tests/consumers/cmake, find_package(mproc 1.0 CONFIG REQUIRED), linked
#     to mproc::mproc (shared) and to mproc::mproc_static,
# each program is checked to load /usr/lib/<multiarch>/libmproc.so.1 (the
# static one: no libmproc at all) and run; `man -w mproc_pool` and
# `man -w mproc` must find installed pages.  The packages are purged on
# exit, whatever happened, so the machine is left as it was.  Refuses to
# start if one of them is already installed, or if an mproc under
# /usr/local would be found before the packaged one.
#
# Environment: DEB_OUT_DIR (default build-deb in the top of the tree).
set -euo pipefail
exec </dev/null

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
debdir=${DEB_OUT_DIR:-$top/build-deb}
consumers=$top/tests/consumers
say() { printf 'check_deb: %s\n' "$*"; }
die() {
    say "FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root: it installs the packages, then purges them"
shopt -s nullglob
debs=("$debdir"/*.deb)
shopt -u nullglob
[ "${#debs[@]}" -gt 0 ] || die "no .deb in $debdir: run scripts/deb.sh (make deb) first"

bash "$top/scripts/deps.sh" deb # gcc, cmake, pkg-config, man-db

ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$ma
# Only the system's own search paths: nothing from the caller's environment.
unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR CMAKE_PREFIX_PATH CPATH \
    C_INCLUDE_PATH LIBRARY_PATH LD_LIBRARY_PATH LD_PRELOAD mproc_DIR

pkgs=()
for deb in "${debs[@]}"; do
    pkgs+=("$(dpkg-deb -f "$deb" Package)")
done
for p in "${pkgs[@]}"; do
    state=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    case "$state" in
    "" | not-installed) ;;
    *) die "$p is already on this machine ($state); 'apt-get purge $p' first" ;;
    esac
done
# gcc searches /usr/local/include before /usr/include, and pkg-config and
# CMake look in /usr/local first too: a `make install` there would be tested
# instead of the packages.
for f in /usr/local/include/mproc.h /usr/local/lib/libmproc* \
    /usr/local/lib/*/libmproc* /usr/local/lib/pkgconfig/mproc.pc \
    /usr/local/lib/cmake/mproc /usr/local/share/pkgconfig/mproc.pc; do
    [ ! -e "$f" ] || die "$f would be found before the packaged files; remove it"
done

work=$(mktemp -d /tmp/mproc-check-deb.XXXXXX)
installed=0
cleanup() {
    local rc=$?
    if [ "$installed" -eq 1 ]; then
        say "purging ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq \
            -o DPkg::Lock::Timeout=600 "${pkgs[@]}" || rc=1
        for p in "${pkgs[@]}"; do
            if dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null |
                grep -qv '^not-installed$'; then
                say "FAILED: $p is still installed" >&2
                rc=1
            fi
        done
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "installing ${pkgs[*]}"
installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${debs[@]}"

version=$(dpkg-query -W -f='${Version}' libmproc1)
[ "$(pkg-config --modversion mproc)" = "${version%%-*}" ] ||
    die "pkg-config says mproc $(pkg-config --modversion mproc), the package is $version"
[ "$(pkg-config --variable=pcfiledir mproc)" = "$libdir/pkgconfig" ] ||
    die "pkg-config reads mproc.pc from $(pkg-config --variable=pcfiledir mproc)"

# check_shared PROGRAM: it needs libmproc.so.1, loads the packaged one, and
# runs right.  (With merged /usr the loader may name it /lib/<multiarch>/...,
# the same file: the two are compared once resolved.)
check_shared() {
    local prog=$1 found
    readelf -d "$prog" | grep -q 'NEEDED.*\[libmproc\.so\.1\]' ||
        die "$prog does not need libmproc.so.1"
    found=$(ldd "$prog" | awk '$1 == "libmproc.so.1" { print $3 }')
    if [ -z "$found" ] || [ "$(readlink -f "$found")" != \
        "$(readlink -f "$libdir/libmproc.so.1")" ]; then
        die "$prog loads libmproc.so.1 from '${found:-nowhere}', not $libdir"
    fi
    say "$prog: libmproc.so.1 => $found ($libdir/libmproc.so.1)"
    "$prog" || die "$prog failed"
}

say "consumer built with pkg-config"
flags=$(pkg-config --cflags --libs mproc)
say "pkg-config --cflags --libs mproc: $flags"
# shellcheck disable=SC2086 # the flags are words
gcc -std=c11 -Wall -Wextra -Werror -O2 "$consumers/pkgconfig/squares.c" \
    $flags -o "$work/squares_pc"
check_shared "$work/squares_pc"

say "consumer built with CMake: find_package(mproc 1.0 CONFIG REQUIRED)"
cmake -S "$consumers/cmake" -B "$work/cmake" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS='-Wall -Wextra -Werror' >/dev/null
mproc_dir=$(sed -n 's/^mproc_DIR:[A-Z]*=//p' "$work/cmake/CMakeCache.txt")
[ "$mproc_dir" = "$libdir/cmake/mproc" ] ||
    die "find_package(mproc) used '$mproc_dir', not $libdir/cmake/mproc"
say "mproc_DIR=$mproc_dir"
cmake --build "$work/cmake" -j 2 >/dev/null
check_shared "$work/cmake/squares"
if readelf -d "$work/cmake/squares_static" | grep -q 'NEEDED.*libmproc'; then
    die "squares_static (mproc::mproc_static) needs a shared libmproc"
fi
say "$work/cmake/squares_static: mproc::mproc_static, no libmproc.so"
"$work/cmake/squares_static" || die "squares_static failed"

for page in mproc_pool mproc; do
    path=$(man -w "$page" 2>/dev/null) || die "man -w $page finds no page"
    case "$path" in
    /usr/share/man/*) say "man -w $page: $path" ;;
    *) die "man -w $page: $path is not an installed page" ;;
    esac
done

say "ok: mproc $version packages install, build consumers and run"
