#!/usr/bin/env python3
"""Finds dependency cycles between the files of each module of the workspace's crates.

A file depends on a sibling file (another child of the same module) when it names it in a path
(`use crate::pickle::arena::Node`, `super::arena`, `crate::format::zip::ZipIndex`), or when it
calls a method that an `impl` block of the sibling defines on a type of the module (methods of
one type may be spread over several files; `self.call(..)` then depends on the file that
defines `call`). A module's own items (declared in its `mod.rs`) are the module's interface,
used by its children, and are not a sibling. Test code (from the first `#[cfg(test)]`) is left
out.

    scripts/module-cycles.py            # every crate under crates/; exits 1 on a cycle
    scripts/module-cycles.py --edges    # also prints every dependency found, with its reason
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Method names too common to attribute to one file by name alone.
COMMON = {
    "new", "len", "get", "get_mut", "insert", "remove", "push", "pop", "take", "clone",
    "iter", "into_iter", "next", "map", "as_bytes", "as_str", "is_empty", "contains", "finish",
    "write", "read", "start", "add", "value", "node", "from", "into", "default", "fmt", "drop",
}


def strip(text):
    """The code of a file without comments, string and char contents, and test code."""
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "r" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and re.match(r'r#*"', text[i:]):
            hashes = re.match(r"r(#*)", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^'\\])'", text[i:]):
            out.append("' '")
            i += len(re.match(r"'(\\.[^']*|[^'\\])'", text[i:]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree, prefix=""):
    """The paths a `use` tree names: `a::{b, c::{d}}` gives `a::b`, `a::c::d`."""
    tree = tree.strip()
    if not tree:
        return []
    depth, parts, current = 0, [], ""
    for ch in tree:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current += ch
    parts.append(current)
    paths = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if "{" in part:
            head, body = part.split("{", 1)
            body = body.rsplit("}", 1)[0]
            paths += expand_use(body, prefix + head)
        else:
            paths.append(prefix + part.split(" as ")[0].strip())
    return paths


def impl_blocks(code):
    """`(type name, block text)` of every `impl` block."""
    blocks = []
    for m in re.finditer(r"^\s*impl\b(?:<[^{;]*?>)?\s+(?:[\w:<>' ,]+\s+for\s+)?([A-Za-z_]\w*)[^{;]*\{", code, re.M):
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += code[i] == "{"
            depth -= code[i] == "}"
            i += 1
        blocks.append((m.group(1), code[m.end():i]))
    return blocks


def module_files(module_dir):
    """The child files of a module directory: `name -> code`, nested files under their child."""
    files = {}
    for path in sorted(module_dir.rglob("*.rs")):
        rel = path.relative_to(module_dir)
        if rel == Path("mod.rs"):
            continue
        child = rel.parts[0].removesuffix(".rs")
        files.setdefault(child, []).append((path, strip(path.read_text())))
    return files


def module_path(crate_src, module_dir):
    return "crate::" + "::".join(module_dir.relative_to(crate_src).parts)


def dependencies(crate_src, module_dir):
    files = module_files(module_dir)
    children = set(files)
    path = module_path(crate_src, module_dir)
    edges = defaultdict(set)
    # Types defined by each child, and the methods each child defines on them.
    defined_types = {}
    for child, sources in files.items():
        for _, code in sources:
            for m in re.finditer(r"\b(?:struct|enum|trait|type)\s+([A-Z]\w*)", code):
                defined_types.setdefault(m.group(1), child)
    # method name -> {(type, child)}: the methods each child defines on a type of the module.
    methods = defaultdict(set)
    own_fns = defaultdict(set)
    for child, sources in files.items():
        for _, code in sources:
            own_fns[child].update(re.findall(r"\bfn\s+(\w+)", code))
            for ty, block in impl_blocks(code):
                if ty in defined_types:
                    for name in re.findall(r"\bfn\s+(\w+)", block):
                        methods[name].add((ty, child))
    for child, sources in files.items():
        for file, code in sources:
            nested = file.parent != module_dir
            names = []
            for m in re.finditer(r"\buse\s+([^;]+);", code):
                names += expand_use(m.group(1))
            names += re.findall(r"(?:crate|super)(?:::\w+)+", code)
            for name in names:
                sibling = None
                if name.startswith(path + "::"):
                    sibling = name[len(path) + 2:].split("::")[0]
                elif name.startswith("super::") and not nested:
                    sibling = name[len("super::"):].split("::")[0]
                elif name.startswith("super::super::") and nested:
                    sibling = name[len("super::super::"):].split("::")[0]
                if sibling in children and sibling != child:
                    edges[child].add((sibling, f"names {name}"))
            # `self.name(..)` inside an impl block of a type: the file defining `name` on it.
            for ty, block in impl_blocks(code):
                for name in set(re.findall(r"\bself\.(\w+)\s*\(", block)):
                    for owner_ty, owner in methods.get(name, ()):
                        if owner_ty == ty and owner != child:
                            edges[child].add((owner, f"calls {ty}::{name}"))
            # `x.name(..)` elsewhere, for a type the file names and a method name defined on
            # it in exactly one other file (and on no type of this file).
            for name in set(re.findall(r"\.(\w+)\s*\(", code)):
                if name in COMMON or name in own_fns[child]:
                    continue
                owners = {
                    (ty, owner)
                    for ty, owner in methods.get(name, ())
                    if owner != child and re.search(rf"\b{ty}\b", code)
                }
                if len({owner for _, owner in owners}) == 1:
                    ty, owner = next(iter(owners))
                    edges[child].add((owner, f"calls {ty}::{name}"))
    return children, edges


def cycles(children, edges):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(children):
        if v not in index:
            visit(v)
    return found


def main():
    show_edges = "--edges" in sys.argv[1:]
    failed = False
    for crate_src in sorted(ROOT.glob("crates/*/src")):
        for mod_rs in sorted(crate_src.rglob("mod.rs")):
            module_dir = mod_rs.parent
            children, edges = dependencies(crate_src, module_dir)
            name = module_dir.relative_to(ROOT)
            if show_edges:
                for child in sorted(edges):
                    for sibling, why in sorted(edges[child]):
                        print(f"{name}: {child} -> {sibling} ({why})")
            for component in cycles(children, edges):
                failed = True
                print(f"{name}: cycle between {', '.join(component)}")
                for child in component:
                    for sibling, why in sorted(edges[child]):
                        if sibling in component:
                            print(f"    {child} -> {sibling}: {why}")
    if not failed:
        print("no cycle between the files of a module")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
