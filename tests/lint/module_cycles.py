"""Fails when the Rust modules of ferroloop-py depend on one another in a cycle.

A module is a file under ``crates/ferroloop-py/src`` (``transports/stream.rs`` is
``transports::stream``; a directory's ``mod.rs`` is the directory's module). A module depends on
another when it names it: ``crate::a::b`` or ``super::b`` (in paths, ``use`` lines included; the
deepest module the path names that exists counts). A module's own submodules and its parent are
not dependencies of it, for what a parent declares (``mod x;``) or a child inherits is not a use.

Usage: ``python tests/lint/module_cycles.py [SRC_DIR]``; prints each cycle and exits 1, or says
how many modules it checked and exits 0.
"""

import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
COMMENT = re.compile(r"//.*")


def module_name(src, path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["lib"]:
        return ""
    return "::".join(parts)


def dependencies(src):
    files = sorted(src.rglob("*.rs"))
    modules = {module_name(src, f): f for f in files}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        parent = name.rsplit("::", 1)[0] if "::" in name else ""
        for line in path.read_text(encoding="utf-8").splitlines():
            line = COMMENT.sub("", line)
            for root, rest in PATH.findall(line):
                segments = rest.strip(":").split("::")
                base = [] if root == "crate" else (parent.split("::") if parent else [])
                target = None
                for i in range(len(segments), 0, -1):
                    candidate = "::".join(base + segments[:i])
                    if candidate in modules:
                        target = candidate
                        break
                if target is None or target == name:
                    continue
                if target.startswith(name + "::") or name.startswith(target + "::") or target == "":
                    continue
                graph[name].add(target)
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(argv):
    src = pathlib.Path(argv[1] if len(argv) > 1 else "crates/ferroloop-py/src")
    graph = dependencies(src)
    found = cycles(graph)
    for component in found:
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        print(f"module cycle: {', '.join(component)}: " + "; ".join(edges))
    if found:
        return 1
    print(f"module cycles: none among {len(graph)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
