"""The package's dependency arrows (docs/architecture.md), checked by walking every module's imports.

cli -> studies -> recipes -> train -> {nn, optim, data} -> config -> {registry, errors}; rundir (the run
directory contract) is torch-free and used by train, science, surgery, studies and the CLI; science stands
alone (numpy/scipy, never torch); surgery and interop use nn; only train/parallel.py touches
torch.distributed; nothing imports cli, and nothing outside studies/ and cli/ imports studies.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "isoflop"

# package -> isoflop packages it may import (itself always allowed; the ROOT modules everyone may use)
ROOT = {"errors", "registry", "config"}
ALLOWED = {
    "errors": set(),
    "registry": {"errors"},
    "config": {"errors", "registry"},
    "rundir": ROOT,
    "nn": ROOT,
    "optim": ROOT,
    "data": ROOT | {"nn"},  # the neural AC tokenizers (ac, equalinfo-ac) run M1, a byte-level TransformerLM
    "train": ROOT | {"nn", "optim", "data", "rundir"},
    "recipes": ROOT | {"nn", "optim", "data", "train"},
    "sweep": ROOT | {"nn", "optim", "data", "train", "recipes", "rundir", "science"},
    "studies": ROOT | {"nn", "optim", "data", "train", "recipes", "rundir", "science", "sweep"},
    "surgery": ROOT | {"nn", "train", "rundir"},
    "interop": ROOT | {"nn", "rundir"},  # rundir.atomic: an exported folder appears whole or not at all
    "science": ROOT | {"nn", "rundir"},  # nn.counting only (pure Python), for shapes in the planner
    "cli": ROOT | {"nn", "optim", "data", "train", "recipes", "studies", "surgery", "interop", "science", "rundir",
            "sweep"},
    "__init__": {"train"},
    "__main__": {"cli"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"


def test_import_arrows():
    bad = []
    for path in SRC.rglob("*.py"):
        pkg = _package(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "isoflop" or len(parts) < 2:
                continue
            target = parts[1]
            if target != pkg and target not in ALLOWED[pkg]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "\n".join(bad)


def test_torch_distributed_only_in_parallel():
    users = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
             if any(n.startswith("torch.distributed") for n in _imports(p))]
    assert users == ["train/parallel.py"]


def test_science_and_counting_do_not_import_torch():
    """At run time, in a fresh interpreter: these modules must load without torch."""
    import subprocess
    import sys

    modules = ["isoflop.config", "isoflop.nn.config", "isoflop.nn.counting", "isoflop.nn.rope",
               "isoflop.nn.ffn_config", "isoflop.nn.mod_config", "isoflop.nn.layout_config",
               "isoflop.nn.attention_config", "isoflop.nn.head_config", "isoflop.data.config", "isoflop.rundir"]
    modules += [f"isoflop.science.{p.stem}" for p in (SRC / "science").glob("*.py")]
    code = f"import sys; import {', '.join(modules)}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "a pure module imported torch"


# ----------------------------------------------------------------------------- no import cycles


def _module_names() -> dict[str, Path]:
    """Every module of the package, dotted (`isoflop.nn.config`; a package is its `__init__`)."""
    names = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_body_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements Python runs when it imports the module: the module body and the blocks in it
    (if / try / with / class bodies), not function bodies nor `if TYPE_CHECKING:` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            found += _module_body_imports(node.orelse if _is_type_checking(node.test) else node.body + node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    found += _module_body_imports(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return found


def _import_graph() -> dict[str, set[str]]:
    """module -> the package modules its module body imports. `from isoflop.x import y` is an edge to
    isoflop.x (whose body runs first) and to isoflop.x.y when that is a module."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _module_body_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: from package (minus level - 1 parts)
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            edges.add(base)
            edges |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_cycle_finder_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_module_bodies():
    graph = _import_graph()
    assert "isoflop.nn.counting" in graph and "isoflop.config" in graph["isoflop.nn.config"]
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
