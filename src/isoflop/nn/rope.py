"""Rotary position embeddings (Su et al. 2021, arXiv 2104.09864): the variant family and its frequencies.

Pure Python (no torch) so the frequencies can be checked against Hugging Face's ROPE_INIT_FUNCTIONS and used
by counting and planning code. The torch module that applies them is `rotary.py`.

Convention: Hugging Face's "rotate half" layout (pairs are (x[i], x[i + head_dim/2])), so a dense model exports
to LlamaForCausalLM with no permutation of q/k weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from isoflop.config import ConfigError, Variant, config, require
from isoflop.nn.attention_config import ClippedAttention, FullAttention, LayerAttention


@config
class RopeConfig(Variant, family=True):
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
        return ReRope(theta=self.theta, window=window, log_n_length=self.log_n_length)

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        # Other keys (e.g. partial_rotary_factor) are ignored, as LlamaRotaryEmbedding ignores them for "default".
        return cls(theta=float(params["rope_theta"]))


def _ladder(theta: float, head_dim: int) -> list[float]:
    """theta^(-2i/d) for i = 0 .. d/2 - 1: plain RoPE's frequencies (as Hugging Face computes them, in float64)."""
    return [1.0 / theta ** ((2 * i) / head_dim) for i in range(head_dim // 2)]


def _check_factor(factor: float) -> None:
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
        _check_factor(self.factor)

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return [f / self.factor for f in _ladder(self.theta, head_dim)]

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
        _check_factor(self.factor)

    def scaled_theta(self, head_dim: int) -> float:
        """theta * factor^(d/(d-2)): the base of the equivalent plain RoPE."""
        return self.theta * self.factor ** (head_dim / (head_dim - 2))

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return _ladder(self.scaled_theta(head_dim), head_dim)


@config
class _TrainLengthRope(RopeConfig):
    """The knob of the kinds measured against the training length L (not a kind itself)."""

    original_max_position_embeddings: int | None = None
    """L: the training length the kind's scaling is measured against. None: the model's training length
    (model.train_length, itself data.seq_len unless set), filled in when the model config is resolved."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.original_max_position_embeddings is None or self.original_max_position_embeddings > 0,
                "original_max_position_embeddings", f"must be positive, got {self.original_max_position_embeddings}")

    def resolved(self, train_length: int) -> RopeConfig:
        if self.original_max_position_embeddings is not None:
            return self
        return dataclasses.replace(self, original_max_position_embeddings=train_length)

    def original_length(self) -> int:
        """L, once resolved; ConfigError before (a model is built from a resolved config)."""
        if self.original_max_position_embeddings is None:
            raise ConfigError("original_max_position_embeddings",
                              f"rope kind {self.kind!r} measures its scaling against the training length, which is "
                              "unset: set model.train_length (ExperimentConfig.resolved_model sets it from "
                              "data.seq_len) or this key")
        return self.original_max_position_embeddings


@config
class DynamicNtkRope(_TrainLengthRope):
    """Dynamic NTK scaling (emozilla 2023; named in Peng et al. 2023, arXiv 2309.00071, §3.3), in Hugging Face's
    form (rope_type "dynamic"): at a length l = max(seq_len, L) the base is
    theta * (factor * l / L - (factor - 1))^(d/(d-2)); up to L it is plain RoPE. Hugging Face reads L from
    `max_position_embeddings` (transformers/modeling_rope_utils.py, `_compute_dynamic_ntk_parameters`)."""

    kind = "dynamic"
    hf_rope_type = "dynamic"
    factor: float = 2.0
    """Scaling factor of Hugging Face's formula (it equals the paper's s = l/L only when factor = 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.factor)

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        length = self.original_length()
        seq_len = length if seq_len is None else max(seq_len, length)
        scale = self.factor * seq_len / length - (self.factor - 1)
        return _ladder(self.theta * scale ** (head_dim / (head_dim - 2)), head_dim)

    def rescale_beyond(self) -> int | None:
        return self.original_length()

    def _hf_knobs(self, max_position_embeddings: int) -> dict[str, Any]:
        if max_position_embeddings != self.original_length():
            raise ConfigError("max_position_embeddings", f"must equal the {self.kind!r} rope's original length "
                                                         f"{self.original_length()}, which transformers reads from "
                                                         f"it, got {max_position_embeddings}")
        return {"factor": self.factor}

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        return cls(theta=float(params["rope_theta"]), factor=float(params["factor"]),
                   original_max_position_embeddings=int(max_position_embeddings))


@config
class YarnRope(_TrainLengthRope):
    """YaRN (Peng et al. 2023, arXiv 2309.00071): NTK-by-parts interpolation plus an attention temperature.

    Pairs whose wavelength is short against L keep their frequency, pairs with wavelength >= L are interpolated
    by `factor`, with a linear ramp between, solved in pair-index space as Hugging Face does
    (rope_type "yarn"). cos and sin are both scaled by the attention factor, 0.1 ln(factor) + 1 by default.
    """

    kind = "yarn"
    hf_rope_type = "yarn"
    factor: float = 4.0
    """Extension factor s: fully interpolated pairs get frequency theta_i / s."""
    beta_fast: float = 32.0
    """Pairs turning more than beta_fast times over L are not interpolated (the paper's beta)."""
    beta_slow: float = 1.0
    """Pairs turning fewer than beta_slow times over L are fully interpolated (the paper's alpha)."""
    truncate: bool = True
    """Round the ramp's ends outwards to whole pair indices (floor / ceil; Hugging Face's default); False keeps
    the continuous ends of the paper's formula."""
    attention_factor_override: float | None = None
    """Scale of cos and sin, if given; otherwise derived from factor (and mscale / mscale_all_dim)."""
    mscale: float | None = None
    """DeepSeek's variant: with mscale_all_dim, the attention factor is m(s, mscale) / m(s, mscale_all_dim),
    m(s, k) = 0.1 k ln s + 1."""
    mscale_all_dim: float | None = None
    """DeepSeek's variant: the denominator's coefficient (see mscale)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.factor)
        require(self.beta_fast > self.beta_slow > 0, "beta_fast",
                f"must exceed beta_slow > 0, got {self.beta_fast} and {self.beta_slow}")
        require(self.attention_factor_override is None or self.attention_factor_override > 0,
                "attention_factor_override", f"must be positive, got {self.attention_factor_override}")

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        d, length = head_dim, self.original_length()

        def pair_index(rotations: float) -> float:  # the pair that turns `rotations` times over L
            return d * math.log(length / (rotations * 2 * math.pi)) / (2 * math.log(self.theta))

        low, high = pair_index(self.beta_fast), pair_index(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001  # Hugging Face's guard against a zero-width ramp
        out = []
        for i, extrapolated in enumerate(_ladder(self.theta, d)):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)  # 0: keep the frequency, 1: interpolate
            out.append(extrapolated / self.factor * ramp + extrapolated * (1 - ramp))
        return out

    def attention_factor(self) -> float:
        if self.attention_factor_override is not None:
            return self.attention_factor_override

        def m(scale: float, k: float = 1.0) -> float:
            return 1.0 if scale <= 1 else 0.1 * k * math.log(scale) + 1.0

        if self.mscale and self.mscale_all_dim:
            return m(self.factor, self.mscale) / m(self.factor, self.mscale_all_dim)
        return m(self.factor)

    def _hf_knobs(self, max_position_embeddings: int) -> dict[str, Any]:
        out = {"factor": self.factor, "original_max_position_embeddings": self.original_length(),
               "beta_fast": self.beta_fast, "beta_slow": self.beta_slow, "truncate": self.truncate}
        optional = {"attention_factor": self.attention_factor_override, "mscale": self.mscale,
                    "mscale_all_dim": self.mscale_all_dim}
        return out | {key: value for key, value in optional.items() if value is not None}

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        # transformers' standardize_rope_params: L defaults to max_position_embeddings; a missing factor is
        # max_position_embeddings / L (DeepSeek-V3's configs); beta_fast / beta_slow default to 32 / 1, also for a
        # stored null.
        original = int(params.get("original_max_position_embeddings", max_position_embeddings))
        factor = params.get("factor")

        def optional(key: str) -> float | None:
            return None if params.get(key) is None else float(params[key])

        return cls(theta=float(params["rope_theta"]),
                   factor=float(max_position_embeddings / original if factor is None else factor),
                   original_max_position_embeddings=original,
                   beta_fast=float(params.get("beta_fast") or 32), beta_slow=float(params.get("beta_slow") or 1),
                   truncate=bool(params.get("truncate", True)),
                   attention_factor_override=optional("attention_factor"), mscale=optional("mscale"),
                   mscale_all_dim=optional("mscale_all_dim"))


@config
class Llama3Rope(_TrainLengthRope):
    """Llama 3.1's frequency-dependent interpolation (Meta, "The Llama 3 Herd of Models", arXiv 2407.21783;
    Hugging Face's rope_type "llama3"): with wavelength w = 2 pi / theta_i, pairs with w < L / high_freq_factor
    keep theta_i, pairs with w > L / low_freq_factor get theta_i / factor, and pairs between blend the two
    with weight (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor). Llama 3.1 has L = 8192."""

    kind = "llama3"
    hf_rope_type = "llama3"
    theta: float = 500000.0
    """Base of the frequency ladder (Llama 3: 5e5)."""
    factor: float = 8.0
    """Interpolation factor of the low frequencies (Llama 3.1: 8)."""
    low_freq_factor: float = 1.0
    """Wavelengths above L / low_freq_factor are fully interpolated (Llama 3.1: 1)."""
    high_freq_factor: float = 4.0
    """Wavelengths below L / high_freq_factor are kept (Llama 3.1: 4)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.factor)
        require(self.high_freq_factor > self.low_freq_factor > 0, "high_freq_factor",
                f"must exceed low_freq_factor > 0, got {self.high_freq_factor} and {self.low_freq_factor}")

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        length = self.original_length()
        low_wavelen, high_wavelen = length / self.low_freq_factor, length / self.high_freq_factor
        out = []
        for f in _ladder(self.theta, head_dim):
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                out.append(f)
            elif wavelen > low_wavelen:
                out.append(f / self.factor)
            else:
                smooth = (length / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
                out.append((1 - smooth) * f / self.factor + smooth * f)
        return out

    def _hf_knobs(self, max_position_embeddings: int) -> dict[str, Any]:
        return {"factor": self.factor, "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
                "original_max_position_embeddings": self.original_length()}

    @classmethod
    def _from_hf(cls, params: Mapping[str, Any], max_position_embeddings: int) -> RopeConfig:
        return cls(theta=float(params["rope_theta"]), factor=float(params["factor"]),
                   low_freq_factor=float(params["low_freq_factor"]),
                   high_freq_factor=float(params["high_freq_factor"]),
                   original_max_position_embeddings=int(params.get("original_max_position_embeddings",
                                                                   max_position_embeddings)))


@config
class ReRope(RopeConfig):
    """ReRoPE (Su, kexue.fm 9708): the relative position m - n is clipped at a window w, so attention uses the
    rotation by min(m - n, w). Plain RoPE frequencies theta^(-2i/d). Prefill attends in two passes (plain RoPE
    inside the window, a fixed rotation w outside); cached decoding keeps keys unrotated (see nn/rerope.py).
    Not exportable to Hugging Face."""

    kind = "rerope"
    window: int = 512
    """w: relative positions from w on are clipped (Su's best: 1/4 to 1/2 of the training length)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.window >= 1, "window", f"must be at least 1, got {self.window}")

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return [self.theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]

    def slope(self) -> float:
        """Growth of the relative position past the window: 0 for ReRoPE."""
        return 0.0

    def relative_position(self, distance: float) -> float:
        """The position used for a query `distance` = m - n >= 0 tokens after its key."""
        if distance < self.window:
            return distance
        return self.window + (distance - self.window) * self.slope()

    def clipped_window(self) -> tuple[int, float] | None:
        return self.window, self.slope()

    def layer_attention(self) -> LayerAttention:
        return ClippedAttention(self)


@config
class LeakyReRope(ReRope):
    """Leaky ReRoPE (Su, kexue.fm 9708): past the window w the relative position grows with slope 1/k,
    w + (m - n - w) / k; k = 1 is plain RoPE and k -> infinity is ReRoPE."""

    kind = "leaky_rerope"
    k: float = 16.0
    """The slope past the window is 1/k (Su's default 16)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.k >= 1.0, "k", f"must be at least 1, got {self.k}")

    def slope(self) -> float:
        return 1.0 / self.k
