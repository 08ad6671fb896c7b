"""Read back what a run directory holds: its config, its model, its tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isoflop.config import ConfigError, apply_overrides
from isoflop.nn.model import TransformerLM
from isoflop.rundir import RunDir
from isoflop.train import checkpoint
from isoflop.train.spec import ExperimentConfig


def load_config(run_dir: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The run's config, with `--set`-style `overrides` (e.g. "model.rope.kind=yarn") applied on top."""
    data = RunDir(run_dir).read_config()
    if overrides:
        data = apply_overrides(data, overrides, ExperimentConfig)
    return ExperimentConfig.from_dict(data)


def load_model(run_dir: str | Path, *, device: str = "cpu", step: int | None = None,
               overrides: list[str] | None = None) -> TransformerLM:
    """The run's model with its newest (or `step`) weights, in eval mode on `device`. `overrides` change the
    config the model is built from (say a RoPE kind switched at eval time); the weights must still fit."""
    cfg = load_config(run_dir, overrides)
    model_state, _, _ = checkpoint.load(RunDir(run_dir).checkpoint(step), with_optimizer=False)
    model = cfg.resolved_model.build()
    model.load_state_dict(model_state, strict=True)
    return model.to(device).eval()


def load_tokenizer(run_dir: str | Path) -> Any:
    """The tokenizer the run was trained with."""
    from isoflop.data.tokenizers.base import load_saved_tokenizer

    run = RunDir(run_dir)
    if not run.tokenizer_dir.is_dir():
        raise ConfigError(str(run_dir), "holds no tokenizer (not a finished run directory?)")
    return load_saved_tokenizer(run.tokenizer_dir)
