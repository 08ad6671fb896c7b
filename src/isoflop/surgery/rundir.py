"""Reading a source run and writing a new run directory that `isoflop train DIR --resume` continues.

The written directory holds config.json, plan.json, tokenizer/, one checkpoint and a record of the surgery
(`<name>.json`); it appears whole (built in a hidden sibling, then renamed) or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from isoflop.config import ConfigError
from isoflop.train import checkpoint
from isoflop.train.plan import resolve_plan
from isoflop.train.run import write_json
from isoflop.train.spec import ExperimentConfig


def read_run(run_dir: Path, *, with_optimizer: bool = False
             ) -> tuple[ExperimentConfig, dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """(config, model state, optimizer state or None, state.json) of the run's newest checkpoint."""
    path = run_dir / "config.json"
    try:
        cfg = ExperimentConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(str(run_dir), "is not a run directory (no config.json)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), f"is not valid JSON: {e}") from None
    latest = checkpoint.latest(run_dir)
    if latest is None:
        raise ConfigError(str(run_dir), "has no checkpoint")
    model_state, optim_state, state = checkpoint.load(latest, with_optimizer=with_optimizer)
    return cfg, model_state, optim_state, state


def check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(str(out), "exists and is not an empty directory")


def write_run(out: Path, cfg: ExperimentConfig, *, tokenizer_dir: Path, step: int,
              model_state: dict[str, torch.Tensor], optim_state: dict[str, Any] | None,
              loader_state: dict[str, Any], record_name: str, record: dict[str, Any]) -> None:
    """Write the run directory `out` (which must be absent or empty) atomically."""
    check_empty(out)
    tmp = out.parent / f".{out.name}.{record_name}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_json(tmp / "config.json", cfg.to_dict())
        write_json(tmp / "plan.json", resolve_plan(cfg, 1).to_dict())
        shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        checkpoint.save(tmp, step, model_state, optim_state, {"loader": loader_state, "elapsed_s": 0.0},
                        keep=cfg.checkpoint.keep)
        write_json(tmp / f"{record_name}.json", record)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
