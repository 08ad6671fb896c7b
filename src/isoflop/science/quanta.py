"""Exponent conversions of the quantization model of neural scaling (Michaud et al. 2023, arXiv 2303.13506).

If the "quanta" a model can learn are used with frequencies p_k ∝ k^-(α+1) — a Zipf law with exponent
α + 1 — then, by their derivation:

- L − L∞ ∝ N^(−α_N) with α_N = α (a model of N parameters learns the N most frequent quanta);
- L − L∞ ∝ D^(−α_D) with α_D = α/(α+1) (multi-epoch and step scaling behave the same way);
- the number of quanta learned from D samples grows as D^(1/(α+1)).

So α_D = α_N/(1 + α_N): Kaplan et al. 2020's α_N = 0.076 implies a Zipf exponent of 1.076 and α_D ≈ 0.0706.
α must be positive (the frequencies must sum), i.e. Zipf exponent > 1 and 0 < α_D < 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from isoflop.science.errors import ScienceError

QuantaError = ScienceError
"""An exponent outside the quantization model's range: one line naming the argument."""


def _check(name: str, value: float, lo: float, hi: float = math.inf) -> float:
    value = float(value)
    if not math.isfinite(value) or not lo < value < hi:
        upper = "" if hi == math.inf else f" and below {hi:g}"
        raise QuantaError(f"{name}: {value!r} must be above {lo:g}{upper}")
    return value


def alpha_n_from_zipf(zipf: float) -> float:
    """α_N = α = zipf − 1 (p_k ∝ k^−zipf)."""
    return _check("zipf", zipf, 1.0) - 1.0


def zipf_from_alpha_n(alpha_n: float) -> float:
    """Zipf exponent α_N + 1."""
    return _check("alpha_n", alpha_n, 0.0) + 1.0


def alpha_d_from_alpha_n(alpha_n: float) -> float:
    """α_D = α_N / (α_N + 1)."""
    a = _check("alpha_n", alpha_n, 0.0)
    return a / (a + 1.0)


def alpha_n_from_alpha_d(alpha_d: float) -> float:
    """α_N = α_D / (1 − α_D), the inverse of alpha_d_from_alpha_n."""
    d = _check("alpha_d", alpha_d, 0.0, 1.0)
    return d / (1.0 - d)


def alpha_d_from_zipf(zipf: float) -> float:
    """α_D = (zipf − 1) / zipf."""
    return alpha_d_from_alpha_n(alpha_n_from_zipf(zipf))


def zipf_from_alpha_d(alpha_d: float) -> float:
    """Zipf exponent 1 / (1 − α_D)."""
    return zipf_from_alpha_n(alpha_n_from_alpha_d(alpha_d))


def quanta_learned_exponent(alpha_n: float) -> float:
    """The exponent of D in the number of quanta learned: 1/(α + 1)."""
    return 1.0 / (_check("alpha_n", alpha_n, 0.0) + 1.0)


@dataclass(frozen=True)
class QuantaExponents:
    """The four linked exponents of one quanta distribution."""

    zipf: float
    """Exponent of the quanta use frequencies, p_k ∝ k^−zipf (= α + 1)."""
    alpha_n: float
    """Parameter-scaling exponent α_N = α."""
    alpha_d: float
    """Data-scaling exponent α_D = α/(α+1)."""
    quanta_exponent: float
    """Quanta learned ∝ D^quanta_exponent, = 1/(α+1)."""

    @classmethod
    def from_alpha_n(cls, alpha_n: float) -> QuantaExponents:
        return cls(zipf_from_alpha_n(alpha_n), float(alpha_n), alpha_d_from_alpha_n(alpha_n),
                   quanta_learned_exponent(alpha_n))

    @classmethod
    def from_zipf(cls, zipf: float) -> QuantaExponents:
        return cls.from_alpha_n(alpha_n_from_zipf(zipf))

    @classmethod
    def from_alpha_d(cls, alpha_d: float) -> QuantaExponents:
        return cls.from_alpha_n(alpha_n_from_alpha_d(alpha_d))
