#!/usr/bin/env bash
# scripts/check_man.sh BUILD_DIR - check the man pages (docs/man/*.scd)
# against the public headers, and the pages BUILD_DIR built from them.
#
#   (a) coverage: every function declared with MPROC_EXPORT in
#       include/mproc/*.h (and BUILD_DIR/include/mproc/version.h, the
#       generated header, when it is there) is named in some page's NAME
#       section -- so it has a page or an alias page -- and declared in that
#       page's SYNOPSIS with the header's exact prototype; every name a
#       page's NAME or SYNOPSIS gives exists in the headers (no stale pages).
#   (b) rendering: every page and alias page BUILD_DIR/docs/man/man[37]/*
#       exists, is not older than its source, and renders with no warning,
#           LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l PAGE
#       (man-db's --warnings adds groff's "mac" warnings, an undefined
#       macro, to those groff gives by default, such as "cannot adjust
#       line"), with every groff warning on as well (groff -man -t -ww -z),
#       and no rendered line wider than 80 columns (a literal block that is
#       too wide draws no warning).
#   (c) examples: every page's EXAMPLE compiles (cc -fsyntax-only) against
#       the headers.
#
# Prints each problem on a line of its own, naming the function and the
# page, and exits 1 if there is any.  Needs python3, scdoc's output in
# BUILD_DIR (configure with MPROC_BUILD_MAN=ON, the default when scdoc is
# installed, and build), man-db and groff: `bash scripts/deps.sh man`.
set -euo pipefail

if [ "$#" -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
BUILD_DIR=$(cd "$1" 2>/dev/null && pwd) || {
    echo "check_man: no build directory '$1'" >&2
    exit 1
}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

missing=()
for tool in python3 man groff; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "check_man: missing ${missing[*]}: run 'bash scripts/deps.sh man'" >&2
    exit 1
fi
if [ ! -d "$BUILD_DIR/docs/man" ]; then
    echo "check_man: $BUILD_DIR/docs/man does not exist: configure with" \
        "-DMPROC_BUILD_MAN=ON (needs scdoc: 'bash scripts/deps.sh man')" \
        "and build" >&2
    exit 1
fi

exec python3 - "$ROOT" "$BUILD_DIR" <<'PY'
import glob, os, re, shutil, subprocess, sys, tempfile

root, build = sys.argv[1], sys.argv[2]
mandir = os.path.join(build, "docs", "man")
problems = []


def problem(msg):
    problems.append(msg)


def rel(path):
    """A path as the reader knows it: relative to the repository, or as is."""
    if path.startswith(root + "/"):
        return os.path.relpath(path, root)
    return path


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def preprocessor_lines(text):
    """Yields each preprocessor directive (continuations joined) and
    returns the text without them."""
    out, directives, lines, i = [], [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("#"):
            d = line
            while d.endswith("\\") and i + 1 < len(lines):
                i += 1
                d = d[:-1] + " " + lines[i]
            directives.append(d.strip())
            out.append("")
        else:
            out.append(line)
        i += 1
    return "\n".join(out), directives


ATTRIBUTE = re.compile(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)")


def normalise(decl):
    decl = ATTRIBUTE.sub(" ", decl)
    decl = re.sub(r"\bMPROC_EXPORT\b", " ", decl)
    decl = re.sub(r"\bMPROC_PRINTF\s*\([^)]*\)", " ", decl)
    decl = re.sub(r"\s+", " ", decl).strip().rstrip(";").strip()
    return re.sub(r"\s*([*(),\[\]])\s*", r"\1", decl)


def decl_name(decl):
    m = re.search(r"([A-Za-z_]\w*)\s*\(", ATTRIBUTE.sub(" ", decl))
    return m.group(1) if m else None


DEFINE = re.compile(r"#\s*define\s+([A-Za-z_]\w*)(\()?")

# ---- the headers ----------------------------------------------------------
headers = sorted(glob.glob(os.path.join(root, "include", "mproc", "*.h")))
generated = os.path.join(build, "include", "mproc", "version.h")
template = os.path.join(root, "include", "mproc", "version.h.in")
if os.path.exists(generated):
    headers.append(generated)
elif os.path.exists(template):
    headers.append(template)

exported = {}  # name -> (normalised prototype, header)
macros = {}    # public macro name -> header
for h in headers:
    text, directives = preprocessor_lines(strip_comments(open(h).read()))
    for d in directives:
        m = DEFINE.match(d)
        if m and not m.group(1).startswith("MPROC__"):
            macros[m.group(1)] = rel(h)
    for m in re.finditer(r"\bMPROC_EXPORT\b[^;{}]*;", text):
        name = decl_name(m.group(0))
        if name:
            exported[name] = (normalise(m.group(0)), rel(h))
if not exported:
    problem("no MPROC_EXPORT function found in include/mproc/*.h")

# ---- the pages ------------------------------------------------------------
def unescape(text):  # scdoc: a backslash makes the next character literal
    return re.sub(r"\\(.)", r"\1", text)


def sections(text):
    parts, name = {}, None
    for line in text.split("\n"):
        m = re.match(r"# (\S.*)$", line)
        if m:
            name = m.group(1).strip()
            parts[name] = []
        elif name:
            parts[name].append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def literal_blocks(text):
    return [unescape(b) for b in re.findall(r"^```\n(.*?)^```$", text,
                                            flags=re.S | re.M)]


pages = {}  # page -> dict
sources = sorted(glob.glob(os.path.join(root, "docs", "man", "*.scd")))
if not sources:
    problem("no docs/man/*.scd page")
for scd in sources:
    text = open(scd, encoding="utf-8").read()
    src = rel(scd)
    m = re.match(r"([A-Za-z0-9_.]+)\(([0-9])\)", text)
    if not m:
        problem(f"{src}: no scdoc preamble (e.g. mproc_pool(3) \"...\")")
        continue
    page, sec = m.group(1), m.group(2)
    if os.path.basename(scd) != f"{page}.{sec}.scd":
        problem(f"{src}: the preamble says {page}({sec})")
    parts = sections(text)
    for want in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        if want not in parts:
            problem(f"{src}: no '# {want}' section")
    if sec == "3":
        for want in ("RETURN VALUE", "ERRORS", "EXAMPLE"):
            if want not in parts:
                problem(f"{src}: no '# {want}' section")
    name_text = unescape(" ".join(parts.get("NAME", "").split()))
    if " - " not in name_text:
        problem(f"{src}: NAME must read 'name, name - description'")
        names = []
    else:
        names = [n.strip() for n in name_text.split(" - ", 1)[0].split(",")]
        names = [n for n in names if n]

    protos, defines = {}, set()
    for block in literal_blocks(parts.get("SYNOPSIS", "")):
        body, directives = preprocessor_lines(strip_comments(block))
        for d in directives:
            dm = DEFINE.match(d)
            if dm:
                defines.add(dm.group(1))
        # Struct and enum bodies hold no function declaration.
        while True:
            flat = re.sub(r"\{[^{}]*\}", "", body)
            if flat == body:
                break
            body = flat
        for stmt in body.split(";"):
            stmt = stmt.strip()
            if (not stmt or stmt.startswith("typedef") or
                    stmt.startswith(("enum", "struct"))):
                continue
            name = decl_name(stmt)
            if name:
                protos[name] = normalise(stmt)
    pages[page] = dict(src=src, sec=sec, names=names, protos=protos,
                       defines=defines, scd=scd,
                       examples=literal_blocks(parts.get("EXAMPLE", "")))

# ---- (a) coverage ---------------------------------------------------------
named = {}  # name -> page
for page, p in pages.items():
    if p["sec"] != "3":
        continue  # an overview (mproc(7)) declares nothing of its own
    for n in p["names"]:
        if n in named:
            problem(f"{n}: in the NAME section of both {named[n]} and {page}")
            continue
        named[n] = page
        if n not in exported and n not in macros:
            problem(f"{p['src']}: NAME lists {n}, which no header declares "
                    f"(stale: remove it, or rename it)")
        elif n in exported and n not in p["protos"]:
            problem(f"{p['src']}: NAME lists {n} but its SYNOPSIS does not "
                    f"declare it: add `{exported[n][0]};`")
        elif n in macros and n not in exported and n not in p["defines"]:
            problem(f"{p['src']}: NAME lists the macro {n} but its SYNOPSIS "
                    f"has no #define {n}")
    for n, proto in p["protos"].items():
        if n not in exported:
            problem(f"{p['src']}: SYNOPSIS declares {n}(), which no header "
                    f"exports (stale)")
        elif proto != exported[n][0]:
            problem(f"{p['src']}: SYNOPSIS prototype of {n} differs from "
                    f"{exported[n][1]}:\n    page:   {proto}\n"
                    f"    header: {exported[n][0]}")
    for n in sorted(p["defines"]):
        if n not in macros:
            problem(f"{p['src']}: SYNOPSIS defines {n}, which no header "
                    f"defines (stale)")

missing_page = sorted(f for f in exported if f not in named)
for f in missing_page:
    problem(f"{f}: no man page ({exported[f][1]}): add it to the NAME and "
            f"SYNOPSIS of a page in docs/man/")

# ---- (b) the built pages render cleanly -----------------------------------
expected = []  # (path, is_alias, page)
for page, p in pages.items():
    d = os.path.join(mandir, "man" + p["sec"])
    expected.append((os.path.join(d, f"{page}.{p['sec']}"), None, page))
    for n in p["names"]:
        if n != page and n not in pages and named.get(n) == page:
            expected.append((os.path.join(d, f"{n}.{p['sec']}"),
                             f".so man{p['sec']}/{page}.{p['sec']}", page))

env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80", MAN_KEEP_FORMATTING="")
env.pop("MANPAGER", None)
env.pop("PAGER", None)
rendered = 0
for path, alias, page in expected:
    shown = rel(path)
    if not os.path.exists(path):
        problem(f"{shown}: not built (build {rel(build)} with "
                f"MPROC_BUILD_MAN=ON)")
        continue
    if alias is None and (os.path.getmtime(path) <
                          os.path.getmtime(pages[page]["scd"])):
        problem(f"{shown}: older than {pages[page]['src']}: rebuild")
    if alias is not None:
        body = open(path).read()
        if body != alias + "\n":
            problem(f"{shown}: should hold exactly '{alias}'")
            continue
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l",
                        os.path.relpath(path, mandir)], cwd=mandir, env=env,
                       capture_output=True, text=True)
    rendered += 1
    if r.returncode != 0 or r.stderr.strip():
        problem(f"{shown}: man --warnings says (exit {r.returncode}):\n    "
                + "\n    ".join(r.stderr.strip().splitlines()))
    elif not r.stdout.strip():
        problem(f"{shown}: renders empty")
    for i, line in enumerate(r.stdout.splitlines() if alias is None else [],
                             1):
        if len(line) > 80:
            problem(f"{shown}: rendered line {i} is {len(line)} columns "
                    f"wide (80 at most): {line.strip()[:60]}...")
    if alias is None:
        g = subprocess.run(["groff", "-man", "-t", "-ww", "-z", "-Tutf8",
                            "-rLL=80n", os.path.relpath(path, mandir)],
                           cwd=mandir, env=env, capture_output=True,
                           text=True)
        if g.returncode != 0 or g.stderr.strip():
            problem(f"{shown}: groff -ww says (exit {g.returncode}):\n    "
                    + "\n    ".join(g.stderr.strip().splitlines()))

# ---- (c) the examples compile ---------------------------------------------
cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
compiled = 0
if cc:
    incs = ["-I" + os.path.join(build, "include"),
            "-I" + os.path.join(root, "include")]
    with tempfile.TemporaryDirectory() as tmp:
        for page, p in pages.items():
            for k, ex in enumerate(p["examples"]):
                if "main(" not in ex and "#include" not in ex:
                    continue  # a fragment, not a program
                f = os.path.join(tmp, f"{page}_{k}.c")
                open(f, "w").write(ex)
                r = subprocess.run([cc, "-std=c11", "-D_GNU_SOURCE",
                                    "-fsyntax-only", "-Wall", "-Wextra"]
                                   + incs + [f], capture_output=True,
                                   text=True)
                compiled += 1
                if r.returncode != 0 or r.stderr.strip():
                    problem(f"{p['src']}: EXAMPLE does not compile cleanly:"
                            "\n    " + "\n    ".join(
                                r.stderr.replace(f, "EXAMPLE").strip()
                                .splitlines()[:12]))
else:
    print("check_man: no C compiler: EXAMPLE sections not compiled",
          file=sys.stderr)

if problems:
    print(f"check_man: {len(problems)} problem(s):", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"check_man: {len(pages)} pages, {len(expected) - len(pages)} alias "
      f"pages, {len(exported)} exported functions: all covered; "
      f"{rendered} rendered without warnings; {compiled} examples compile")
PY
