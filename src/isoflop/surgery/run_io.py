"""Surgery's reading and writing of runs: the newest checkpoint of a source run, and a new run directory that
`isoflop train DIR --resume` continues.

The written directory holds the config, the plan, the tokenizer, one checkpoint and the record of the surgery
(RunDir.surgery_file); it appears whole (built in a hidden sibling, then renamed) or not at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from isoflop.config import ConfigError
from isoflop.rundir import RunDir
from isoflop.rundir.atomic import build_dir
from isoflop.train import checkpoint
from isoflop.train.run_plan import resolve_plan
from isoflop.train.spec import ExperimentConfig


def read_run(run_dir: Path, *, with_optimizer: bool = False
             ) -> tuple[ExperimentConfig, dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """(config, model state, optimizer state or None, checkpoint state) of the run's newest checkpoint."""
    run = RunDir(run_dir)
    cfg = ExperimentConfig.from_dict(run.read_config())
    latest = run.latest_checkpoint()
    if latest is None:
        raise ConfigError(str(run_dir), "has no checkpoint")
    model_state, optim_state, state = checkpoint.load(latest, with_optimizer=with_optimizer)
    return cfg, model_state, optim_state, state


def write_run(out: Path, cfg: ExperimentConfig, *, tokenizer_dir: Path, step: int,
              model_state: dict[str, torch.Tensor], optim_state: dict[str, Any] | None,
              loader_state: dict[str, Any], surgery: str, record: dict[str, Any]) -> None:
    """Write the run directory `out` (which must be absent or empty) atomically; `surgery` names the record."""

    def fill(tmp: Path) -> None:
        run = RunDir(tmp)
        run.write_config(cfg.to_dict())
        run.write_plan(resolve_plan(cfg, 1).to_dict())
        shutil.copytree(tokenizer_dir, run.tokenizer_dir)
        checkpoint.save(run, step, model_state, optim_state, {"loader": loader_state, "elapsed_s": 0.0},
                        keep=cfg.checkpoint.keep)
        run.write_surgery(surgery, record)

    build_dir(out, fill)
