"""Rotary position embeddings (Su et al. 2021, arXiv 2104.09864): the variant family, plain RoPE and the two kinds
that rescale every frequency alike (position interpolation, static NTK). The kinds measured against the training
length (dynamic NTK, YaRN, Llama 3) are in rope_scaled.py, the clipped kinds (ReRoPE) in rope_clipped.py.

Pure Python (no torch) so the frequencies can be checked against Hugging Face's ROPE_INIT_FUNCTIONS and used
by counting and planning code. The torch module that applies them is `rotary.py`.

Convention: Hugging Face's "rotate half" layout (pairs are (x[i], x[i + head_dim/2])), so a dense model exports
to LlamaForCausalLM with no permutation of q/k weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from isoflop.config import ConfigError, Variant, config, require
from isoflop.nn.attention_config import FullAttention, LayerAttention


@config
class RopeConfig(Variant, family=True, members=("isoflop.nn.rope_scaled", "isoflop.nn.rope_clipped")):
    """How positions rotate queries and keys: `model.rope.kind` picks the variant.

    Hugging Face mapping: a kind with an `hf_rope_type` is held by transformers' RoPE of that `rope_type`
    (transformers/modeling_rope_utils.py, `ROPE_INIT_FUNCTIONS`); `to_hf` writes its `rope_parameters` and
    `RopeConfig.from_hf` reads them back into the member of that type.
    """

    default_kind = "default"
    #: transformers' `rope_type` computing exactly this kind; None: no Hugging Face form (export refuses)
    hf_rope_type: ClassVar[str | None] = None

    log_n_length: int | None = None
    """Log-n query scaling (Su, kexue.fm 8823 and 9708), on any kind: None is off; an integer L (the training
    length) multiplies the query at 0-based position p by max(1, ln(p + 1) / ln L), so positions up to L are
    unchanged."""
    theta: float = 10000.0
    """Base of the frequency ladder: pair i of head_dim d turns at theta^(-2i/d) (Su et al. 2021, eq. 15:
    1e4; Llama 3: 5e5)."""

    def __post_init__(self) -> None:
        require(self.log_n_length is None or self.log_n_length >= 2, "log_n_length",
                f"must be at least 2 (or None), got {self.log_n_length}")
        require(self.theta > 1.0, "theta", f"must be greater than 1, got {self.theta}")

    def query_scale(self, position: int) -> float:
        """The log-n factor of the query at 0-based `position` (1 when log-n scaling is off)."""
        if self.log_n_length is None:
            return 1.0
        return max(1.0, math.log(position + 1) / math.log(self.log_n_length))

    def clipped_window(self) -> tuple[int, float] | None:
        """(window w, slope) for kinds that clip relative positions (ReRoPE: r -> w + (r - w) * slope past w),
        which need their own attention; None for the kinds plain attention serves."""
        return None

    def layer_attention(self) -> LayerAttention:
        """The attention of a layer that sees the whole prefix with this RoPE (the `full` layout's layers)."""
        return FullAttention()

    def clipped(self, window: int) -> RopeConfig | None:
        """This kind's frequencies with relative positions clipped at `window` (ReRoPE, same weights), for a
        layout that switches its full layers to ReRoPE at evaluation; None when the kind has no such form."""
        return None

    def resolved(self, train_length: int) -> RopeConfig:
        """This config with knobs that default to the training length filled in (ModelConfig does it)."""
        return self

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        """The rotation frequency of each of the head_dim/2 pairs. `seq_len` (the largest position + 1 of a
        forward) matters only to kinds whose `rescale_beyond()` is not None; None means the training length."""
        raise NotImplementedError

    def attention_factor(self) -> float:
        """Scale applied to cos and sin (YaRN's mscale); 1 for plain RoPE."""
        return 1.0

    def rescale_beyond(self) -> int | None:
        """The length past which `inv_freq` depends on `seq_len` (dynamic NTK); None for kinds where it never
        does, so the rotary module computes their frequencies once."""
        return None

    # ------------------------------------------------------------------ Hugging Face
    def check_hf(self) -> None:
        """ConfigError (key relative to this config) unless transformers' Llama RoPE computes this config."""
        if self.hf_rope_type is None:
            raise ConfigError("kind", f"no Llama rope_parameters mapping for {self.kind!r} "
                                      f"(mapped: {', '.join(self.hf_kinds())})")
        if self.log_n_length is not None:
            raise ConfigError("log_n_length", f"Llama has no log-n query scaling, got {self.log_n_length}")

    def to_hf(self, *, max_position_embeddings: int) -> dict[str, Any]:
        """transformers 5's `rope_parameters`: `rope_type`, `rope_theta` and the type's knobs."""
        self.check_hf()
        return {"rope_type": self.hf_rope_type, "rope_theta": self.theta,
                **self._hf_knobs(max_position_embeddings)}

    def _hf_knobs(self, max_position_embeddings: int) -> dict[str, Any]:
        return {}

    @classmethod
    def from_hf(cls, params: Mapping[str, Any], *, max_position_embeddings: int) -> RopeConfig:
        """The member whose `hf_rope_type` is `params["rope_type"]`, read from transformers 5's
        `rope_parameters` (`max_position_embeddings`: the config's, which some types measure against)."""
        rope_type = params.get("rope_type", "default")
        for kind in cls.kinds():
            member: type[RopeConfig] = cls.variant_class(kind)
            if member.hf_rope_type == rope_type:
                return member._from_hf(params, max_position_embeddings)
        raise ConfigError("", f"rope type {rope_type!r} has no isoflop mapping (mapped: {', '.join(cls.hf_kinds())})")

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        raise NotImplementedError

    @classmethod
    def hf_kinds(cls) -> list[str]:
        """The kinds with a Hugging Face form."""
        return [k for k in cls.kinds() if cls.variant_class(k).hf_rope_type is not None]


@config
class DefaultRope(RopeConfig):
    """Plain RoPE: theta^(-2i/d) for pair i."""

    kind = "default"
    hf_rope_type = "default"

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return [self.theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]

    def clipped(self, window: int) -> RopeConfig | None:
        from isoflop.nn.rope_clipped import ReRope

        return ReRope(theta=self.theta, window=window, log_n_length=self.log_n_length)

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        # Other keys (e.g. partial_rotary_factor) are ignored, as LlamaRotaryEmbedding ignores them for "default".
        return cls(theta=float(params["rope_theta"]))


def ladder(theta: float, head_dim: int) -> list[float]:
    """theta^(-2i/d) for i = 0 .. d/2 - 1: plain RoPE's frequencies (as Hugging Face computes them, in float64)."""
    return [1.0 / theta ** ((2 * i) / head_dim) for i in range(head_dim // 2)]


def check_factor(factor: float) -> None:
    require(factor >= 1.0, "factor", f"must be at least 1, got {factor}")


@config
class LinearRope(RopeConfig):
    """Position Interpolation (Chen et al. 2023, arXiv 2306.15595): positions m become m / factor, i.e. every
    frequency is divided by `factor` (Hugging Face's rope_type "linear")."""

    kind = "linear"
    hf_rope_type = "linear"
    factor: float = 2.0
    """Extension factor s = L'/L: new context length over the training length."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_factor(self.factor)

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return [f / self.factor for f in ladder(self.theta, head_dim)]

    def _hf_knobs(self, max_position_embeddings: int) -> dict[str, Any]:
        return {"factor": self.factor}

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        return cls(theta=float(params["rope_theta"]), factor=float(params["factor"]))


@config
class NtkRope(RopeConfig):
    """Static NTK-aware scaling (bloc97 2023; Su, kexue.fm 9675): plain RoPE with base theta * s^(d/(d-2)), so the
    lowest frequency is interpolated by s and the highest is kept. Hugging Face has no such type (it would be its
    "default" type with the scaled `rope_theta`), so export refuses rather than rewrite theta."""

    kind = "ntk"
    factor: float = 2.0
    """Extension factor s: the base becomes theta * s^(d/(d-2))."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_factor(self.factor)

    def scaled_theta(self, head_dim: int) -> float:
        """theta * factor^(d/(d-2)): the base of the equivalent plain RoPE."""
        return self.theta * self.factor ** (head_dim / (head_dim - 2))

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return ladder(self.scaled_theta(head_dim), head_dim)
