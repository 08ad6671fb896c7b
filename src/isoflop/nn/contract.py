"""The two contracts of the model code, written down.

`TrainableLM` is what the trainer, evaluation and sampling rely on in a model (TransformerLM satisfies it);
`RoutedModule` is what a module that routes tokens (an MoE layer, a Mixture-of-Depths block) gives the model,
which gathers them once and answers the trainer's questions from them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TrainableLM(Protocol):
    """A causal language model as the trainer sees it."""

    def __call__(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of next tokens."""
        ...

    def aux_loss(self) -> torch.Tensor | None:
        """The weighted auxiliary losses (in the graph) of the last forward, summed; None when there are none."""
        ...

    def routing_stats(self) -> dict[str, float]:
        """Detached metrics of the last forward, for the metrics log."""
        ...

    def routing_load_buffers(self) -> list[torch.Tensor]:
        """Per-module load counters the trainer sums across ranks before `after_optimizer_step`."""
        ...

    def after_optimizer_step(self) -> None:
        """Updates that follow each optimizer step (e.g. the aux-loss-free bias)."""
        ...

    def non_causal_reason(self) -> str | None:
        """Why the model's routing looks at other tokens (so it cannot sample), or None when it can."""
        ...

    def has_causal_rule(self) -> bool:
        """Whether `use_causal_routing(True)` changes what the model computes (and the model can sample)."""
        ...

    def use_causal_routing(self, enabled: bool = True) -> None:
        """Switch the routed modules to their causal rule (sampling) or back."""
        ...


class RoutedModule(nn.Module):
    """A module that routes tokens. Its forward sets `aux_loss` (its weighted auxiliary loss in the graph, or
    None) and `stats` (detached scalars); the defaults below are those of a module with no step-wise update and
    no separate sampling rule."""

    def __init__(self) -> None:
        super().__init__()
        self.aux_loss: torch.Tensor | None = None
        self.stats: dict[str, torch.Tensor] = {}

    def load_buffers(self) -> list[torch.Tensor]:
        """Load counters to sum across ranks before `after_optimizer_step`."""
        return []

    def after_optimizer_step(self) -> None:
        """Called after each optimizer step, with `load_buffers()` summed over the global batch."""

    def non_causal_reason(self) -> str | None:
        """Why this module's routing depends on later tokens or other sequences, or None."""
        return None

    def has_causal_rule(self) -> bool:
        """Whether the module routes differently for sampling (`use_causal_routing`)."""
        return False

    def use_causal_routing(self, enabled: bool = True) -> None:
        """Switch to the sampling rule, or back (no-op for a module without one)."""
