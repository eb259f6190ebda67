#!/usr/bin/env bash
# scripts/deps.sh - make sure this machine has what building and testing
# mproc needs, installing what is missing with apt-get (Debian/Ubuntu).
#
#   scripts/deps.sh [toolchain] [asan] [tsan] [fuzz] [format] [deb]
#                   [pkgconfig] [man]
#       toolchain (always checked): cmake, make, gcc (+ libc headers), python3
#       asan:   gcc's AddressSanitizer and UBSan runtimes (libasan, libubsan)
#       tsan:   gcc's ThreadSanitizer runtime (libtsan)
#       fuzz:   clang with libFuzzer (clang, libclang-rt-dev)
#       format: clang-format
#       pkgconfig: pkg-config and g++ (scripts/check_consumers.sh, make
#                  check-install: its consumers include a C++ program)
#       man:    scdoc (builds docs/man), man-db and groff-base
#               (scripts/check_man.sh renders the pages)
#       deb:    Debian packaging and its checks (scripts/deb.sh,
#               scripts/check_deb.sh): debhelper, dpkg-dev, lintian,
#               fakeroot, build-essential, scdoc, pkg-config, man-db
#
#   scripts/deps.sh --san-wrapper address|thread
#       Does the toolchain + that sanitizer's checks, then compiles and runs a
#       tiny sanitized program.  Prints on stdout the command prefix the test
#       run needs: nothing, or "setarch <arch> -R" when the sanitizer only
#       works with address-space randomisation off (older TSan runtimes on
#       kernels with vm.mmap_rnd_bits > 28).  Exits 1 if it cannot work.
#
# apt-get runs only when something is missing: "apt-get update" once, then a
# non-interactive install.  Needs root (or password-less sudo) for that;
# otherwise it says what to install and fails.  All messages go to stderr.
set -euo pipefail

say() { printf 'deps: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

SUDO=()
APT_UPDATED=0
PROBE_DIR=""
trap '[ -z "$PROBE_DIR" ] || rm -rf "$PROBE_DIR"' EXIT

apt_install() {
    [ "$#" -gt 0 ] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing: $* (no apt-get here; install them by hand)"
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        else
            die "missing: $* (run 'apt-get install $*' as root)"
        fi
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get update -q </dev/null >&2
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" </dev/null >&2
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

CC_BIN=${CC:-cc}

check_toolchain() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    # gcc without libc headers cannot build anything.
    if [ ! -e /usr/include/stdio.h ] && ! pkg_installed libc6-dev; then
        missing+=(libc6-dev)
    fi
    apt_install "${missing[@]}"
    if ! command -v "$CC_BIN" >/dev/null 2>&1; then
        say "note: CC=$CC_BIN not found; cmake will look for another compiler"
        CC_BIN=gcc
    fi
}

gcc_major() {
    gcc -dumpversion 2>/dev/null | cut -d. -f1
}

# The runtime packages of gcc's sanitizers, by gcc major version.
san_packages() {
    local kind=$1 major
    major=$(gcc_major)
    case "$kind:$major" in
    address:1[2-4]) echo "libasan8 libubsan1" ;;
    address:11) echo "libasan6 libubsan1" ;;
    thread:1[2-4]) echo "libtsan2" ;;
    thread:11) echo "libtsan0" ;;
    *) echo "libgcc-$major-dev" ;; # depends on every runtime of that gcc
    esac
}

check_sanitizer() {
    local kind=$1 missing=() p
    for p in $(san_packages "$kind"); do
        pkg_installed "$p" || missing+=("$p")
    done
    apt_install "${missing[@]}"
}

# clang and its libFuzzer runtime (Debian ships it in libclang-rt-N-dev).
check_fuzzer() {
    local dir
    command -v clang >/dev/null 2>&1 || apt_install clang
    dir=$(mktemp -d)
    PROBE_DIR=$dir # removed on exit
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
        '{ (void)d; (void)n; return 0; }' >"$dir/f.c"
    if ! clang -fsanitize=fuzzer "$dir/f.c" -o "$dir/f" >/dev/null 2>&1; then
        apt_install "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
        clang -fsanitize=fuzzer "$dir/f.c" -o "$dir/f" ||
            die "clang cannot link libFuzzer (-fsanitize=fuzzer)"
    fi
}

# What scripts/deb.sh and scripts/check_deb.sh need, by package name.
check_deb() {
    local missing=() p
    for p in debhelper dpkg-dev lintian fakeroot build-essential scdoc \
        pkg-config man-db; do
        pkg_installed "$p" || missing+=("$p")
    done
    apt_install "${missing[@]}"
}

# scdoc turns docs/man/*.scd into man pages; man and groff check them.
check_man() {
    local missing=()
    command -v scdoc >/dev/null 2>&1 || missing+=(scdoc)
    command -v man >/dev/null 2>&1 || missing+=(man-db)
    command -v groff >/dev/null 2>&1 || missing+=(groff-base)
    apt_install "${missing[@]}"
}

# Compiles and runs a small threaded, forking program with the sanitizer;
# prints the wrapper needed to run it (see the top of this file).
probe_sanitizer() {
    local kind=$1 flags dir wrapper=""
    case "$kind" in
    address) flags="-fsanitize=address,undefined -fno-omit-frame-pointer" ;;
    thread) flags="-fsanitize=thread" ;;
    *) die "unknown sanitizer '$kind' (address or thread)" ;;
    esac
    dir=$(mktemp -d)
    PROBE_DIR=$dir # removed on exit
    cat >"$dir/probe.c" <<'EOF'
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
static int n;
static void *run(void *arg)
{
    (void)arg;
    n++;
    return 0;
}
int main(void)
{
    pthread_t t;
    int status = 1;
    if (pthread_create(&t, 0, run, 0) != 0 || pthread_join(t, 0) != 0) {
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        _exit(n == 1 ? 0 : 1);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        return 1;
    }
    return status == 0 ? 0 : 1;
}
EOF
    # shellcheck disable=SC2086
    if ! "$CC_BIN" $flags -g -pthread "$dir/probe.c" -o "$dir/probe" \
        >"$dir/log" 2>&1; then
        cat "$dir/log" >&2
        die "$CC_BIN cannot build with $flags"
    fi
    if ! TSAN_OPTIONS=die_after_fork=0 "$dir/probe" >"$dir/log" 2>&1; then
        if command -v setarch >/dev/null 2>&1 &&
            setarch "$(uname -m)" -R "$dir/probe" >/dev/null 2>&1; then
            wrapper="setarch $(uname -m) -R"
            say "$kind sanitizer needs ASLR off here; tests run under '$wrapper'"
        else
            cat "$dir/log" >&2
            die "a program built with $flags does not run on this machine"
        fi
    fi
    printf '%s\n' "$wrapper"
}

main() {
    local want_asan=0 want_tsan=0 want_fuzz=0 want_format=0 want_deb=0
    local want_pkgconfig=0 want_man=0 wrapper_for=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
        toolchain) ;;
        asan) want_asan=1 ;;
        tsan) want_tsan=1 ;;
        fuzz) want_fuzz=1 ;;
        format) want_format=1 ;;
        pkgconfig) want_pkgconfig=1 ;;
        deb) want_deb=1 ;;
        man) want_man=1 ;;
        --san-wrapper)
            case "${2:-}" in
            address | thread) wrapper_for=$2 ;;
            *) die "--san-wrapper needs address or thread" ;;
            esac
            shift
            ;;
        -h | --help)
            sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2
            return 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done

    check_toolchain
    [ "$want_asan" -eq 0 ] || check_sanitizer address
    [ "$want_tsan" -eq 0 ] || check_sanitizer thread
    [ "$want_fuzz" -eq 0 ] || check_fuzzer
    if [ "$want_pkgconfig" -eq 1 ]; then
        local need=()
        command -v pkg-config >/dev/null || need+=(pkg-config)
        command -v g++ >/dev/null || need+=(g++)
        apt_install "${need[@]}"
    fi
    [ "$want_deb" -eq 0 ] || check_deb
    [ "$want_man" -eq 0 ] || check_man
    if [ "$want_format" -eq 1 ] && ! command -v clang-format-14 >/dev/null &&
        ! command -v clang-format >/dev/null; then
        apt_install clang-format
    fi
    if [ -n "$wrapper_for" ]; then
        check_sanitizer "$wrapper_for"
        probe_sanitizer "$wrapper_for"
    fi
}

main "$@"
