"""The RoPE kinds measured against the training length L (`original_max_position_embeddings`, which defaults to
it): dynamic NTK, YaRN and Llama 3's frequency-dependent interpolation. Pure Python; family in rope.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from isoflop.config import ConfigError, config, require
from isoflop.nn.rope import RopeConfig, check_factor, ladder


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
        check_factor(self.factor)

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        length = self.original_length()
        seq_len = length if seq_len is None else max(seq_len, length)
        scale = self.factor * seq_len / length - (self.factor - 1)
        return ladder(self.theta * scale ** (head_dim / (head_dim - 2)), head_dim)

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
        check_factor(self.factor)
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
        for i, extrapolated in enumerate(ladder(self.theta, d)):
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
        check_factor(self.factor)
        require(self.high_freq_factor > self.low_freq_factor > 0, "high_freq_factor",
                f"must exceed low_freq_factor > 0, got {self.high_freq_factor} and {self.low_freq_factor}")

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        length = self.original_length()
        low_wavelen, high_wavelen = length / self.low_freq_factor, length / self.high_freq_factor
        out = []
        for f in ladder(self.theta, head_dim):
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
