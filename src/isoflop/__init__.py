"""isoflop: compute-efficient language-model training.

The public API for scripts and notebooks is small and imported lazily, so `import isoflop` stays cheap:

    model = isoflop.load_model("runs/tiny")          # eval mode, CPU by default
    tokenizer = isoflop.load_tokenizer("runs/tiny")
    logits_BTV = model(tokens_BT)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "load_tokenizer"]


def load_model(run_dir: str, *, device: str = "cpu", step: int | None = None) -> Any:
    """The trained model of a run directory (latest checkpoint, or `step`), in eval mode on `device`."""
    from isoflop.train.artifacts import load_model as _load

    return _load(run_dir, device=device, step=step)


def load_tokenizer(run_dir: str) -> Any:
    """The tokenizer a run was trained with."""
    from isoflop.train.artifacts import load_tokenizer as _load

    return _load(run_dir)
