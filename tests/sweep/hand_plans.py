"""Sweep plans made by hand from tiny configs (the executors' tests do not depend on grid.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from isoflop.cli.common import load_experiment
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.plan import InitPoint, PlannedRun, SweepPlan
from tests.conftest import tiny_overrides

SRC = Path(__file__).resolve().parents[2] / "src"
RECORD_KEYS = ("val_loss", "val_bpb", "steps", "D_tokens", "flops", "N_total", "flops_per_token")
"""What must be equal bit for bit between an interrupted and an uninterrupted run (times excluded)."""


def tiny_run(key: str, corpus: Path, *, steps: int = 12, role: str = "grid", extra: tuple[str, ...] = (),
             init_from: InitPoint | None = None) -> PlannedRun:
    cfg = load_experiment("tiny", tiny_overrides(corpus, steps) + list(extra))
    tokens = steps * cfg.train.batch_size * cfg.data.seq_len
    return PlannedRun(key=key, role=role, budget=None if role == "trunk" else 1e9, target_params=1e4, shape={},
                      params={"total": 0}, steps=steps, tokens=tokens, flops_per_token=1, flops=float(tokens),
                      flops_6nd=float(tokens), bill_flops=float(tokens), lr=cfg.optim.lr,
                      batch_size=cfg.train.batch_size, config=cfg.to_dict(), init_from=init_from)


def make_sweep(path: Path, runs: list[PlannedRun], mode: str = "grid") -> SweepDir:
    sweep = SweepDir(path)
    sweep.write_plan(SweepPlan(mode=mode, budgets=[1e9], runs=runs, bills={}, spec={}))
    return sweep


def isoflop_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "isoflop", *args]


def child_env(cache: Path) -> dict[str, str]:
    """The environment a CLI subprocess needs: this checkout's isoflop and the test's token cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(SRC.parent)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["ISOFLOP_CACHE"] = str(cache)
    return env


def run_cli(cache: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(isoflop_cmd(*args), env=child_env(cache), capture_output=True, text=True, timeout=timeout)


def record_values(sweep: SweepDir, key: str) -> dict:
    record = sweep.run_dir(key).read_record().to_dict()
    return {k: record[k] for k in RECORD_KEYS}
