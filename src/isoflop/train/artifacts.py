"""Read back what a run directory holds: its config, its model, its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from isoflop.config import ConfigError, apply_overrides
from isoflop.nn.model import TransformerLM
from isoflop.train import checkpoint
from isoflop.train.spec import ExperimentConfig


def load_config(run_dir: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The run's config, with `--set`-style `overrides` (e.g. "model.rope.kind=yarn") applied on top."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(str(run_dir), "not a run directory (no config.json)")
    data = json.loads(path.read_text())
    if overrides:
        data = apply_overrides(data, overrides, ExperimentConfig)
    return ExperimentConfig.from_dict(data)


def checkpoint_path(run_dir: str | Path, step: int | None = None) -> Path:
    if step is None:
        path = checkpoint.latest(run_dir)
        if path is None:
            raise ConfigError(str(run_dir), "holds no checkpoint yet")
        return path
    path = Path(run_dir) / "checkpoints" / checkpoint.step_dir_name(step)
    if not path.is_dir():
        raise ConfigError(str(run_dir), f"has no checkpoint at step {step} (has {checkpoint.list_steps(run_dir)})")
    return path


def load_model(run_dir: str | Path, *, device: str = "cpu", step: int | None = None,
               overrides: list[str] | None = None) -> TransformerLM:
    """The run's model with its newest (or `step`) weights, in eval mode on `device`. `overrides` change the
    config the model is built from (say a RoPE kind switched at eval time); the weights must still fit."""
    cfg = load_config(run_dir, overrides)
    model_state, _, _ = checkpoint.load(checkpoint_path(run_dir, step), with_optimizer=False)
    model = cfg.model_config.build()
    model.load_state_dict(model_state, strict=True)
    return model.to(device).eval()


def load_tokenizer(run_dir: str | Path) -> Any:
    from isoflop.data.tokenizers.base import load_saved_tokenizer as _load

    path = Path(run_dir) / "tokenizer"
    if not path.is_dir():
        raise ConfigError(str(run_dir), "holds no tokenizer/ (not a finished run directory?)")
    return _load(path)


def token_bytes(tokenizer: Any, vocab_size: int, byte_share: float | None = None) -> torch.Tensor:
    """Bytes each model vocabulary row stands for (0 for padding rows past the tokenizer's vocabulary).
    Tokenizers without exact byte lengths (compressed text, see tokenizers/base.py) give float64 rows: each
    content token stands for `byte_share` bytes, the split's n_bytes / content tokens (PreparedData.byte_share)."""
    exact = getattr(tokenizer, "exact_byte_lengths", True)
    if not exact and byte_share is None:
        raise ValueError(f"a {tokenizer.kind} tokenizer's tokens are not whole bytes: token_bytes needs byte_share")
    out = torch.zeros(vocab_size, dtype=torch.long if exact else torch.float64)
    lengths = torch.as_tensor(tokenizer.token_byte_lengths(), dtype=out.dtype)
    out[: lengths.numel()] = lengths if exact else lengths * byte_share
    return out
