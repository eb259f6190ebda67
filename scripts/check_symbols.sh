#!/usr/bin/env bash
# scripts/check_symbols.sh BUILD_DIR - the shared library exports exactly
# the functions the public headers declare with MPROC_EXPORT.
#
# Compares the global defined symbols of BUILD_DIR/libmproc.so (nm -D
# --defined-only; the linker's own _init, _fini, _edata, _end, __bss_start
# and version nodes aside) with the functions declared MPROC_EXPORT in
# include/mproc.h, include/mproc/*.h and the generated
# BUILD_DIR/include/mproc/version.h.  Prints every symbol missing on either
# side (and any exported data symbol) and exits 1; exits 0 when they match.
#
# The headers are read as C, not grepped: comments, string literals and
# preprocessor lines (so function-like macros such as mproc_pool_new, which
# wrap exported functions, and anything inside a macro body) are dropped
# first; a declaration may span lines, carry attributes (MPROC_PRINTF(...),
# __attribute__((...))) and parenthesise its name: int (mproc_x)(void).
set -euo pipefail

usage() {
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
}
[ "$#" -eq 1 ] || usage
build=$1
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'check_symbols: %s\n' "$*"; }

lib=$build/libmproc.so
if [ ! -e "$lib" ]; then
    lib=$(find "$build" -maxdepth 3 -name libmproc.so -print -quit 2>/dev/null || true)
fi
[ -n "$lib" ] && [ -e "$lib" ] || {
    say "no libmproc.so in $build (build it first)"
    exit 1
}
version_h=$build/include/mproc/version.h
[ -e "$version_h" ] || {
    say "no generated $version_h (configure $build first)"
    exit 1
}
command -v nm >/dev/null 2>&1 || {
    say "nm not found (binutils)"
    exit 1
}

# "TYPE NAME" per defined dynamic symbol, version suffix (@VER, @@VER) cut.
symbols=$(nm -D --defined-only "$lib" | awk 'NF >= 2 {
    name = $NF; sub(/@.*/, "", name); print $(NF - 1), name }')

python3 - "$lib" "$symbols" "$version_h" "$top"/include/mproc.h \
    "$top"/include/mproc/*.h <<'PY'
import re
import sys

lib, symbols, headers = sys.argv[1], sys.argv[2], sys.argv[3:]

# Symbols the toolchain puts in every shared object.
LINKER = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def strip_c(text):
    """The text with line splices joined, comments and string/char literals
    blanked, and preprocessor directives removed; newlines are kept."""
    text = text.replace("\\\r\n", "").replace("\\\n", "")
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(" " + "\n" * text.count("\n", i, j))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    lines = "".join(out).split("\n")
    return "\n".join("" if l.lstrip().startswith("#") else l for l in lines)


def drop_calls(text, pattern):
    """Removes every `pattern(...)` (balanced parentheses) from text."""
    while True:
        m = re.search(pattern + r"\s*\(", text)
        if not m:
            return text
        depth, j = 0, m.end() - 1
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        text = text[: m.start()] + " " + text[j:]


# At the first '(' of a declaration: a parenthesised name, `(name)(`, or
# a function returning a function pointer, `(*name(`.  Otherwise that '('
# opens the parameter list and the name is the last identifier before it.
PAREN_NAME = re.compile(r"\(\s*(?:\*+\s*(?:const\s+)?([A-Za-z_]\w*)\s*\("
                        r"|([A-Za-z_]\w*)\s*\)\s*\()")
IDENT = re.compile(r"[A-Za-z_]\w*")


def declared_name(decl):
    """(name, is_function) of one declaration, or (None, False)."""
    paren = decl.find("(")
    if paren < 0:
        names = IDENT.findall(decl.split("=")[0].split("[")[0])
        return (names[-1] if names else None), False
    m = PAREN_NAME.match(decl, paren)
    if m:
        return m.group(1) or m.group(2), True
    names = IDENT.findall(decl[:paren])
    return (names[-1] if names else None), True


functions, variables = {}, {}
for path in headers:
    with open(path, encoding="utf-8") as f:
        code = strip_c(f.read())
    # Declarations end at ';', and a '{' or '}' ends whatever precedes it.
    for chunk in re.split(r"[;{}]", code):
        m = re.search(r"\bMPROC_EXPORT\b", chunk)
        if not m:
            continue
        decl = chunk[m.end():]
        decl = drop_calls(decl, r"\b__attribute__")
        decl = drop_calls(decl, r"\b__declspec")
        decl = drop_calls(decl, r"\bMPROC_[A-Z0-9_]+")
        decl = re.sub(r"\b[A-Z][A-Z0-9_]*\b", " ", decl)  # bare macros
        where = path.rsplit("/include/", 1)[-1]
        name, is_function = declared_name(decl)
        if name is None:
            continue
        (functions if is_function else variables).setdefault(name, where)

exported, data = set(), {}
for line in symbols.splitlines():
    kind, name = line.split(None, 1)
    if name in LINKER or kind == "A":
        continue
    if kind in ("T", "W", "i"):
        exported.add(name)
    else:
        data[name] = kind

bad = 0
not_declared = sorted(exported - set(functions))
not_exported = sorted(set(functions) - exported)
if not_declared:
    bad = 1
    print("exported by %s but not declared MPROC_EXPORT in a public header:"
          % lib)
    for name in not_declared:
        print("    " + name)
if not_exported:
    bad = 1
    print("declared MPROC_EXPORT but not exported by %s:" % lib)
    for name in not_exported:
        print("    %s  (%s)" % (name, functions[name]))
if data:
    bad = 1
    print("data symbols exported by %s (only functions may be):" % lib)
    for name in sorted(data):
        print("    %s  (nm type %s)" % (name, data[name]))
if variables:
    bad = 1
    print("MPROC_EXPORT on a declaration that is not a function:")
    for name in sorted(variables):
        print("    %s  (%s)" % (name, variables[name]))
if bad:
    print("check_symbols: FAILED")
    sys.exit(1)
print("check_symbols: ok: %d functions declared MPROC_EXPORT, %d exported, "
      "the same" % (len(functions), len(exported)))
PY
