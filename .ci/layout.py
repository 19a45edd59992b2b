#!/usr/bin/env python3
"""Checks a crate's source layout: no import cycle between its files, no file over 600 lines and
no function over 120 lines (tests excepted).

    python3 .ci/layout.py node/src [more/src ...]

An edge A -> B is any path in A (a `use` tree or a path in the code) that resolves to an item of
the module file B: `crate::`, `super::`, `self::`, a child module's name, or a name a `use`
brought in. A re-export (`pub use`, `pub(crate) use`) is a module's public face, not a dependency
of its code, so it makes no edge; a name it brings in that the file's code uses does. A cycle is a strongly connected set of two or more files. Test
code (`#[cfg(test)]` modules, files named `tests.rs` or under a `tests/` folder) is left out.
Exits 1 and says what is wrong when a rule is broken.
"""

import re
import sys
from pathlib import Path

MAX_FILE_LINES = 600
MAX_FN_LINES = 120


def strip_comments_and_strings(text):
    """Blanks comments, string and char literals (keeping newlines, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # a char literal ('a', '\n', '\u{..}') but not a lifetime ('a)
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def strip_test_modules(code):
    """Blanks `#[cfg(test)]` items (keeping newlines)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        end = matching_brace(code, m.end() - 1)
        code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start(): end + 1]) + code[end + 1:]


def module_path(src, file):
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}}` -> [(['a','b'], 'b'), (['a','c','d'], 'd'), (['a','c','e'], 'f')]."""
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, s):
        # split s on top-level commas
        depth, start, items = 0, 0, []
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(s[start:k])
                start = k + 1
        items.append(s[start:])
        for item in items:
            if not item:
                continue
            b = item.find("{")
            if b >= 0:
                head = [p for p in item[:b].split("::") if p]
                walk(prefix + head, item[b + 1: item.rfind("}")])
            else:
                alias = None
                if "as" in item and re.search(r"[A-Za-z0-9_]as[A-Za-z_]", item):
                    # whitespace is gone: split on the last 'as' that follows a path segment
                    m = re.match(r"(.*[A-Za-z0-9_])as([A-Za-z_]\w*)$", item)
                    if m and not m.group(1).endswith("::"):
                        item, alias = m.group(1), m.group(2)
                segs = prefix + [p for p in item.split("::") if p]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                if segs:
                    results.append((segs, alias or segs[-1]))

    walk([], tree)
    return results


def analyse(src):
    src = Path(src)
    files = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src)
        if f.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        files[module_path(src, f)] = f
    modules = set(files)

    def deepest(segs):
        for k in range(len(segs), -1, -1):
            if tuple(segs[:k]) in modules:
                return tuple(segs[:k])
        return None

    edges, problems, long_fns = {}, [], []
    for mod, f in files.items():
        raw = f.read_text()
        code = strip_test_modules(strip_comments_and_strings(raw))
        code_lines = code.count("\n") + 1
        total_lines = raw.count("\n")
        if total_lines > MAX_FILE_LINES:
            problems.append(f"{f}: {total_lines} lines (limit {MAX_FILE_LINES})")
        # current module for `self`/children; `super` is its parent
        parent = mod[:-1]
        children = {m[-1] for m in modules if len(m) == len(mod) + 1 and m[: len(mod)] == mod}

        def resolve(segs):
            head = segs[0]
            if head == "crate":
                base, rest = (), segs[1:]
            elif head == "super":
                base, rest = parent, segs[1:]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            elif head == "self":
                base, rest = mod, segs[1:]
            elif head in children:
                base, rest = mod, segs
            elif head in aliases:
                return resolve(aliases[head] + segs[1:])
            else:
                return None
            return deepest(list(base) + list(rest))

        aliases = {}
        targets = set()
        uses = list(re.finditer(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", code))
        for m in uses:
            for segs, alias in expand_use_tree(m.group(1)):
                if segs[0] in ("crate", "super", "self") or segs[0] in children:
                    aliases[alias] = segs
        for m in uses:
            if m.group(0).lstrip().startswith("pub"):
                continue
            for segs, _ in expand_use_tree(m.group(1)):
                t = resolve(segs)
                if t is not None:
                    targets.add(t)
        body = re.sub(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", code)
        for m in re.finditer(r"(?<![:\w])([a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)", body):
            t = resolve(m.group(1).split("::"))
            if t is not None:
                targets.add(t)
        targets.discard(mod)
        edges[mod] = targets

        # function lengths
        for m in re.finditer(r"\bfn\s+(\w+)\s*[<(]", code):
            brace = code.find("{", m.end())
            semi = code.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                continue  # a declaration without a body
            end = matching_brace(code, brace)
            start_line = code.count("\n", 0, m.start()) + 1
            end_line = code.count("\n", 0, end) + 1
            length = end_line - start_line + 1
            if length > MAX_FN_LINES:
                long_fns.append(f"{f}:{start_line}: fn {m.group(1)} is {length} lines (limit {MAX_FN_LINES})")
        del code_lines

    # Tarjan's strongly connected components
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    for comp in sccs:
        names = sorted(str(files[c].relative_to(src)) for c in comp)
        detail = []
        for c in sorted(comp):
            for t in sorted(edges[c] & set(comp)):
                detail.append(f"    {files[c].relative_to(src)} -> {files[t].relative_to(src)}")
        problems.append(f"{src}: import cycle of {len(comp)} files: {', '.join(names)}\n" + "\n".join(detail))
    return problems + long_fns, len(files), sum(len(e) for e in edges.values())


def main():
    roots = sys.argv[1:] or ["node/src"]
    failed = False
    for root in roots:
        problems, nfiles, nedges = analyse(root)
        print(f"{root}: {nfiles} files, {nedges} import edges, {len(problems)} problems")
        for p in problems:
            print("  " + p)
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
