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
    "studies": ROOT | {"nn", "optim", "data", "train", "recipes", "rundir", "science"},
    "surgery": ROOT | {"nn", "train", "rundir"},
    "interop": ROOT | {"nn", "rundir"},  # rundir.atomic: an exported folder appears whole or not at all
    "science": ROOT | {"nn", "rundir"},  # nn.counting only (pure Python), for shapes in the planner
    "cli": ROOT | {"nn", "optim", "data", "train", "recipes", "studies", "surgery", "interop", "science", "rundir"},
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
               "isoflop.data.config", "isoflop.rundir"] + [f"isoflop.science.{p.stem}" for p in (SRC / "science").glob("*.py")]
    code = f"import sys; import {', '.join(modules)}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "a pure module imported torch"
