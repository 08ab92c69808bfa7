"""List import cycles inside a package: every import counts (module level, under
``if TYPE_CHECKING:``, inside functions), since each one is an arrow between modules.

    python scripts/import_cycles.py [PACKAGE_DIR]     # default: flowvoice

Prints each strongly connected component of the import graph with the imports that make it,
and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package``."""
    root = package.parent
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _kind(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """'type-checking', 'function' or 'module': where the import statement sits."""
    kind = "module"
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return "type-checking"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "function"
    return kind


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(imported module of the package, line, kind) for each import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            # ``import a.b.c`` of a name that is not a module: the nearest enclosing module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            edge = (target, node.lineno, _kind(node, parents))
            if target and target != name and edge not in found:
                found.append(edge)
    return found


def cycles(package: Path) -> list[tuple[list[str], list[tuple[str, str, int, str]]]]:
    """Strongly connected components with more than one module, with their inner imports."""
    modules = module_names(package)
    edges: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for name, path in modules.items():
        edges[name] = imports(name, path, modules)

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in edges[v]:
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
                components.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for name in modules:
        if name not in index:
            visit(name)
    result = []
    for component in sorted(components):
        members = set(component)
        inner = [
            (src, dst, line, kind)
            for src in component
            for dst, line, kind in edges[src]
            if dst in members
        ]
        result.append((component, inner))
    return result


def main(argv: list[str]) -> int:
    package = Path(argv[0] if argv else "flowvoice").resolve()
    found = cycles(package)
    for component, inner in found:
        print("cycle: " + ", ".join(component))
        for src, dst, line, kind in inner:
            where = modules_path(package, src)
            print(f"  {where}:{line}: {src} -> {dst} ({kind})")
    if not found:
        print(f"no import cycles in {package.name}")
    return 1 if found else 0


def modules_path(package: Path, name: str) -> str:
    path = module_names(package)[name]
    return str(path.relative_to(package.parent))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
