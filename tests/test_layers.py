"""Layers point one way (data -> models -> analysis -> inference -> the rest) and no module
imports itself back: read off the source (imports inside functions included), and checked by
importing every module alone."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyrodyn"

# What each layer may import from pyrodyn (besides itself and private helpers).
ALLOWED = {
    "data": set(),
    "models": {"data"},
    "analysis": {"data", "models"},
    "inference": {"data", "models", "analysis"},
}
PRIVATE = {"_version", "_isolation"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The pyrodyn modules a file imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # never executed: no runtime edge
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pyrodyn"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "pyrodyn":
                continue
            for alias in node.names:  # "from . import sites" imports a module
                candidate = f"{source}.{alias.name}"
                found.add(candidate if _exists(candidate) else source)
    return found - {name}


def _exists(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_point_one_way():
    for name, imported in graph().items():
        if layer(name) not in ALLOWED or name.endswith("__init__"):
            continue
        for other in imported:
            other_layer = layer(other)
            assert other != "pyrodyn", f"{name} imports the top-level package"
            if other_layer in PRIVATE or other_layer == layer(name):
                continue
            assert other_layer in ALLOWED[layer(name)], f"{name} imports {other}"


def test_no_import_cycles():
    edges = graph()
    # package __init__ files import their children by design; a child importing its own
    # package's __init__ back is what makes a cycle, so keep every edge
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [node])


def test_every_module_imports_alone():
    names = sorted(n for n in graph() if n != "pyrodyn")
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'pyrodyn']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
