"""Mixture of Depths (Raposo et al. 2024, arXiv 2404.02258) as config classes (pure Python).

`model.mod.kind = "topk"` routes every `every`-th block (block i when (i + 1) % every == 0): a scalar router
picks the top `capacity * T` tokens of each sequence; they get x + r * f(x) and the rest pass through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from isoflop.config import ConfigError, Variant, config, require

if TYPE_CHECKING:
    from torch import nn


@config
class MoDConfig(Variant, family=True):
    """`model.mod.kind`: `none` (every block sees every token) or `topk`."""

    default_kind = "none"
    #: True when some blocks process only some tokens (window layouts and ReRoPE assume every token)
    routes_tokens: ClassVar[bool] = False

    def is_routed(self, layer: int) -> bool:
        """True when block `layer` (0-based) is a routed block."""
        return False

    def wrap(self, block: nn.Module, d_model: int, layer: int) -> nn.Module:
        """Block `layer` as the model holds it: the block itself, or the block behind a router."""
        return block

    # ------------------------------------------------------------------ counting (nn/counting.py)
    def router_params(self, d_model: int, layer: int) -> int:
        """Parameters block `layer` adds to decide which tokens it processes (they see every token)."""
        return 0

    def token_share(self, layer: int, seq_len: int) -> float:
        """The fraction of a sequence's tokens that block `layer` processes."""
        return 1.0

    def detached_input_params(self, d_model: int, layer: int) -> int:
        """Parameters of block `layer`'s matmuls whose input is detached (stop-gradient): their backward computes
        no input gradient, one matmul fewer."""
        return 0

    def check_hf(self) -> None:
        """ConfigError (key relative to this config) unless a Hugging Face class computes this config."""
        raise ConfigError("kind", f"no Hugging Face class holds Mixture of Depths, got {self.kind!r}")


@config
class NoMoD(MoDConfig):
    """No routing: a plain transformer."""

    kind = "none"

    def check_hf(self) -> None:
        pass


@config
class TopKMoD(MoDConfig):
    """Expert-choice routing over the sequence with a static k = floor(capacity * T) per sequence."""

    kind = "topk"
    routes_tokens = True

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

    def wrap(self, block: nn.Module, d_model: int, layer: int) -> nn.Module:
        if not self.is_routed(layer):
            return block
        from isoflop.nn.mod import RoutedBlock

        return RoutedBlock(block, self, d_model)

    def router_params(self, d_model: int, layer: int) -> int:
        """The router (D -> 1) and the predictor (D -> D/2 -> 1, no biases) of nn/mod.py's RoutedBlock."""
        if not self.is_routed(layer):
            return 0
        predictor = d_model * (d_model // 2) + d_model // 2 if self.predictor else 0
        return d_model + predictor

    def token_share(self, layer: int, seq_len: int) -> float:
        return self.selected(seq_len) / seq_len if self.is_routed(layer) else 1.0

    def detached_input_params(self, d_model: int, layer: int) -> int:
        """The predictor's first layer (D x D/2): it reads stop-gradient inputs."""
        return d_model * (d_model // 2) if self.is_routed(layer) and self.predictor else 0
