#!/usr/bin/env bash
# scripts/deb.sh - build the Debian packages libmproc1 and libmproc-dev
# (debian/) from the working tree, check them with lintian, and put the
# .debs in build-deb/.
#
# The files git tracks, and the new files it does not ignore, are copied as
# they are in the working tree (edits not yet committed included) to a
# temporary directory, and `dpkg-buildpackage -us -uc -b` runs there: it
# writes its results next to the source, so this tree only gets build-deb/.
# lintian then checks the .changes and the .debs it names, and a source
# package made from the same copy (`dpkg-source -b`: the checks of
# debian/control and debian/copyright run on it): an error fails the
# script, warnings are printed.  The full build log is kept in
# build-deb/build.log.  Prints the paths of the .debs on stdout.
#
# Installs what it needs first (scripts/deps.sh deb).
# Environment: DEB_BUILD_OPTIONS (default "parallel=2"), DEB_OUT_DIR (default
# build-deb in the top of the tree).
set -euo pipefail
exec </dev/null

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${DEB_OUT_DIR:-$top/build-deb}
say() { printf 'deb: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

bash "$top/scripts/deps.sh" deb
command -v git >/dev/null 2>&1 || die "git is needed to list the sources"
git -C "$top" rev-parse --git-dir >/dev/null 2>&1 ||
    die "$top is not a git work tree"

work=$(mktemp -d /tmp/mproc-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/mproc
mkdir "$src"

# A file deleted in the working tree but still in the index is left out.
say "copying the sources to $src"
(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' f; do
        if [ -e "$top/$f" ] || [ -L "$top/$f" ]; then
            printf '%s\0' "$f"
        fi
    done | tar -C "$top" --null -T - -cf - | tar -C "$src" -xf -
[ -x "$src/debian/rules" ] || die "no executable debian/rules in the sources"

version=$(cd "$src" && dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
changes=$work/mproc_${version}_${arch}.changes
dsc=$work/mproc_${version}.dsc
log=$work/build.log

# Before the build, while the copy holds nothing but the sources.
(cd "$work" && dpkg-source -b mproc >/dev/null) ||
    die "dpkg-source -b failed"

say "dpkg-buildpackage -us -uc -b (mproc $version, $arch); log: $out/build.log"
mkdir -p "$out"
rm -f "$out"/*.deb # a failed build must not leave the last one's behind
rc=0
(cd "$src" && DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-parallel=2} \
    dpkg-buildpackage -us -uc -b) >"$log" 2>&1 || rc=$?
cp "$log" "$out/build.log"
if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log" >&2
    if grep -q '^dpkg-gensymbols: error' "$log"; then
        say "the library's exported symbols are not debian/libmproc1.symbols:"
        say "add each new symbol there (the diff above, '+' lines) with the"
        say "version that brings it; a removed one breaks the ABI"
    fi
    die "dpkg-buildpackage failed (exit $rc); full log: $out/build.log"
fi
[ -f "$changes" ] || die "dpkg-buildpackage made no $changes"

say "lintian (errors fail, warnings are shown)"
rc=0
report=$(lintian --allow-root --fail-on error "$changes" "$dsc" 2>&1) || rc=$?
[ -z "$report" ] || printf '%s\n' "$report" >&2
say "lintian: $(grep -c '^E: ' <<<"$report" || true) error(s)," \
    "$(grep -c '^W: ' <<<"$report" || true) warning(s)"
[ "$rc" -eq 0 ] || die "lintian failed (exit $rc)"

debs=()
for deb in "$work"/*.deb; do
    [ -e "$deb" ] || continue
    cp "$deb" "$out/"
    debs+=("$out/$(basename "$deb")")
done
[ "${#debs[@]}" -gt 0 ] || die "dpkg-buildpackage made no .deb"
say "${#debs[@]} package(s) in $out"
printf '%s\n' "${debs[@]}"
