"""Mixture of Depths (Raposo et al. 2024, arXiv 2404.02258) as config classes (pure Python).

`model.mod.kind = "topk"` routes every `every`-th block (block i when (i + 1) % every == 0): a scalar router
picks the top `capacity * T` tokens of each sequence; they get x + r * f(x) and the rest pass through.
"""

from __future__ import annotations

from isoflop.config import Variant, config, require


@config
class MoDConfig(Variant, family=True):
    """`model.mod.kind`: `none` (every block sees every token) or `topk`."""

    default_kind = "none"

    def is_routed(self, layer: int) -> bool:
        """True when block `layer` (0-based) is a routed block."""
        return False


@config
class NoMoD(MoDConfig):
    """No routing: a plain transformer."""

    kind = "none"


@config
class TopKMoD(MoDConfig):
    """Expert-choice routing over the sequence with a static k = floor(capacity * T) per sequence."""

    kind = "topk"

    capacity: float = 0.125
    """C: fraction of each sequence's tokens a routed block processes (the paper's best, 12.5 %)."""
    every: int = 2
    """Route block i when (i + 1) % every == 0 (2: every other block, the paper's setting)."""
    predictor: bool = True
    """Train a small MLP on stop-gradient inputs to predict top-k membership; sampling routes by it
    (the paper's second causal method)."""
    aux_bce_weight: float = 0.0
    """Weight of a BCE loss on the router's logits with top-k membership as targets (the paper's first causal
    method); when > 0 and there is no predictor, sampling routes tokens with sigmoid(r) > 0.5."""

    def __post_init__(self) -> None:
        require(0 < self.capacity <= 1, "capacity", f"must be in (0, 1], got {self.capacity}")
        require(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        require(self.aux_bce_weight >= 0, "aux_bce_weight", f"must be >= 0, got {self.aux_bce_weight}")

    def is_routed(self, layer: int) -> bool:
        return (layer + 1) % self.every == 0

    def selected(self, seq_len: int) -> int:
        """k: tokens a routed block processes in a sequence of `seq_len` (at least 1)."""
        # rounded first: 0.29 * 100 is 28.999999999999996 in floats, and the paper's k is 29
        return max(1, int(round(self.capacity * seq_len, 9)))
