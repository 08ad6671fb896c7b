"""Optimizers as a variant family: `optim.kind` picks one; each holds only its own knobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isoflop.config import Variant, config, require

if TYPE_CHECKING:
    import torch
    from torch import nn


@config
class OptimConfig(Variant, family=True):
    """The optimizer. `lr` is the peak learning rate; the schedule scales it every step."""

    default_kind = "adamw"
    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.1
    """Decoupled weight decay for matrices (norms and biases get none; see param_groups.py)."""

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be non-negative, got {self.weight_decay}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError


@config
class AdamWConfig(OptimConfig):
    """torch.optim.AdamW (Loshchilov & Hutter 2019)."""

    kind = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    """Moment decay rates (beta2 = 0.95 as in GPT-3 and Llama for stability at small batch)."""
    eps: float = 1e-8
    """Denominator epsilon."""
    fused: bool | None = None
    """torch's fused kernel; None lets torch choose (foreach on CPU)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(all(0 <= b < 1 for b in self.betas), "betas", f"each must be in [0, 1), got {self.betas}")
        require(self.eps > 0, "eps", f"must be positive, got {self.eps}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        import torch

        from isoflop.optim.param_groups import decay_groups

        return torch.optim.AdamW(decay_groups(model, self.weight_decay), lr=self.lr, betas=self.betas,
                                 eps=self.eps, fused=self.fused)
