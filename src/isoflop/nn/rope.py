"""Rotary position embeddings (Su et al. 2021, arXiv 2104.09864): the variant family and its frequencies.

Pure Python (no torch) so the frequencies can be checked against Hugging Face's ROPE_INIT_FUNCTIONS and used
by counting and planning code. The torch module that applies them is `rotary.py`.

Convention: Hugging Face's "rotate half" layout (pairs are (x[i], x[i + head_dim/2])), so a dense model exports
to LlamaForCausalLM with no permutation of q/k weights.
"""

from __future__ import annotations

from isoflop.config import Variant, config, require


@config
class RopeConfig(Variant, family=True):
    """How positions rotate queries and keys: `model.rope.kind` picks the variant."""

    default_kind = "default"

    def inv_freq(self, head_dim: int) -> list[float]:
        """The rotation frequency of each of the head_dim/2 pairs, for the training length."""
        raise NotImplementedError

    def attention_factor(self) -> float:
        """Scale applied to cos and sin (YaRN's mscale); 1 for plain RoPE."""
        return 1.0


@config
class DefaultRope(RopeConfig):
    """Plain RoPE: theta^(-2i/d) for pair i."""

    kind = "default"
    theta: float = 10000.0
    """Base of the frequency ladder (Llama 2: 1e4, Llama 3: 5e5)."""

    def __post_init__(self) -> None:
        require(self.theta > 1.0, "theta", f"must be greater than 1, got {self.theta}")

    def inv_freq(self, head_dim: int) -> list[float]:
        return [self.theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]
