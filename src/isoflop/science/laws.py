"""Parametric scaling laws (Chinchilla, Kaplan's joint law, Muennighoff's data-constrained law), named presets,
and `parse_law` for the CLI's `--law`. docs/science.md states every formula and constant with its source.

- Chinchilla (Hoffmann et al. 2022, arXiv 2203.15556, eq. 2): L(N, D) = E + A/N^α + B/D^β. Minimising it on the
  line C = 6·N·D gives their eq. 4, written once here (`ChinchillaLaw.optimal`): N_opt = G·(C/6)^a and
  D_opt = G⁻¹·(C/6)^b with G = (αA/(βB))^(1/(α+β)), a = β/(α+β), b = α/(α+β). E does not move the optimum.
- Kaplan et al. 2020 (arXiv 2001.08361, eq. 1.5 with Table 2's constants): L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D,
  N the non-embedding parameter count.
- Muennighoff et al. 2023 (arXiv 2305.16264, as the "Parametric Fit" section of huggingface/datablations'
  README states it): the Chinchilla form evaluated at effective data D' and effective parameters N', which discount
  repeated tokens and parameters beyond what the unique data can feed.

`Law` is what the planner asks of any of them: a loss, its parameters, and its Chinchilla form if it has one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from isoflop.registry import Registry, did_you_mean
from isoflop.science.errors import ScienceError

ArrayLike = float | np.ndarray


class Law(Protocol):
    """A scaling law as the planner uses it (ChinchillaLaw, KaplanLaw, MuennighoffLaw, or a user's own)."""

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss (nats/token) of N parameters trained on D tokens."""
        ...

    def to_dict(self) -> dict[str, float]:
        """The parameters, keyed as `law_from_dict` reads them back."""
        ...

    @property
    def chinchilla(self) -> ChinchillaLaw | None:
        """The law's Chinchilla form E + A/N^α + B/D^β, whose closed-form optimum the planner uses; None when the
        law has none (Kaplan's), and the planner then searches numerically."""
        ...


# ----------------------------------------------------------------------------- Chinchilla

@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 2); N parameters, D training tokens, L nats/token."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @classmethod
    def from_log(cls, a: ArrayLike, b: ArrayLike, e: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> ChinchillaLaw:
        """From Hoffmann's log-space parameters [a, b, e, α, β], A, B, E = exp(a, b, e) (App. D.2).

        Arrays give a law with array fields, which evaluates like a batch of laws (used by the bootstrap).
        """
        values = [np.exp(a), np.exp(b), np.exp(e), np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)]
        if all(np.ndim(v) == 0 for v in values):
            values = [float(v) for v in values]
        A, B, E, al, be = values
        return cls(E=E, A=A, B=B, alpha=al, beta=be)

    @property
    def chinchilla(self) -> ChinchillaLaw:
        return self

    @property
    def theta(self) -> tuple[float, float, float, float, float]:
        """The log-space parameter vector [a, b, e, α, β] = [log A, log B, log E, α, β] that the fit works in."""
        return (math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta)

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss; N and D broadcast against each other."""
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        out = self.E + self.A / N**self.alpha + self.B / D**self.beta
        return float(out) if np.ndim(out) == 0 else out

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a: β/(α+β) (Hoffmann eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b: α/(α+β) (Hoffmann eq. 4); a + b = 1."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """G = (αA/(βB))^(1/(α+β)) (Hoffmann eq. 4)."""
        # numpy's power: a degenerate fit (a negative coefficient or exponent) gives NaN, not a complex number
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.asarray(self.alpha * self.A / (self.beta * self.B), dtype=float)
            return ratio ** (1.0 / np.asarray(self.alpha + self.beta, dtype=float))

    def optimal(self, C: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(N_opt, D_opt) minimising L under 6·N·D = C.

        Written as N = G·s^a and D = s/N with s = C/6 so that 6·N_opt·D_opt = C holds to rounding (a + b = 1
        would otherwise cost a few ulps through two separate powers).
        """
        s = np.asarray(C, dtype=float) / 6.0
        N = self.G * s**self.a
        D = s / N
        if np.ndim(N) == 0:
            return float(N), float(D)
        return N, D

    def optimal_tokens(self, N: ArrayLike) -> ArrayLike:
        """The tokens D with which N parameters are compute-optimal: eq. 4 solved for C, D = G⁻¹·(N/G)^(b/a)."""
        D = (np.asarray(N, dtype=float) / self.G) ** (self.alpha / self.beta) / self.G
        return float(D) if np.ndim(D) == 0 else D

    def optimal_at_loss(self, loss: float) -> tuple[float, float]:
        """(N, D) of least compute 6·N·D that reach `loss` ℓ > E.

        The optimum satisfies αA/N^α = βB/D^β (as eq. 4 does), so the two reducible terms split ℓ − E in the ratio
        β : α, giving N = (A·(1 + α/β)/(ℓ − E))^(1/α) and D = (B·(1 + β/α)/(ℓ − E))^(1/β) (Sardana et al. 2024,
        arXiv 2401.00448: their Lagrange solution with no inference tokens).
        """
        gap = float(loss) - self.E
        if not (math.isfinite(gap) and gap > 0):
            raise ScienceError(f"target {loss} must exceed the law's irreducible loss E = {self.E:.6g}", key="loss")
        N = (self.A * (self.alpha / self.beta + 1) / gap) ** (1 / self.alpha)
        D = (self.B * (self.beta / self.alpha + 1) / gap) ** (1 / self.beta)
        return N, D

    def tokens_per_param(self, C: ArrayLike) -> ArrayLike:
        """D_opt/N_opt at compute C: G⁻²·(C/6)^(b−a)."""
        N, D = self.optimal(C)
        return D / N

    def loss_at(self, C: ArrayLike) -> ArrayLike:
        """The compute-optimal loss L(N_opt(C), D_opt(C))."""
        return self.loss(*self.optimal(C))

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


# ----------------------------------------------------------------------------- Kaplan

@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan et al. 2020 joint law (eq. 1.5): L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D.

    N counts non-embedding parameters; L is in nats on WebText2.
    """

    N_c: float
    D_c: float
    alpha_N: float
    alpha_D: float

    @property
    def chinchilla(self) -> None:
        return None

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        out = ((self.N_c / N) ** (self.alpha_N / self.alpha_D) + self.D_c / D) ** self.alpha_D
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


# ----------------------------------------------------------------------------- Muennighoff

@dataclass(frozen=True)
class MuennighoffLaw:
    """Data-constrained law (Muennighoff et al. 2023): L = E + A/N'^α + B/D'^β on a Chinchilla `base`.

    D' = U_D + U_D·R_D*·(1 − exp(−R_D/R_D*)), with U_D unique tokens and R_D = D/U_D − 1 repetitions;
    N' = U_N + U_N·R_N*·(1 − exp(−R_N/R_N*)), with U_N = min(N, the compute-optimal N for U_D tokens) and
    R_N = N/U_N − 1. As repetition grows D' → (1 + R_D*)·U_D and N' → (1 + R_N*)·U_N.
    """

    base: ChinchillaLaw
    R_D_star: float
    R_N_star: float

    @property
    def chinchilla(self) -> ChinchillaLaw:
        """The base law: the loss of fresh data and parameters the data can feed (the planner's compute optimum)."""
        return self.base

    def effective_data(self, D_unique: ArrayLike, D_total: ArrayLike) -> ArrayLike:
        """D' for D_total tokens drawn from D_unique unique tokens (D_total ≥ D_unique means repetition)."""
        U = np.asarray(D_unique, dtype=float)
        R = np.maximum(np.asarray(D_total, dtype=float) / U - 1.0, 0.0)
        out = U + U * self.R_D_star * (1.0 - np.exp(-R / self.R_D_star))
        return float(out) if np.ndim(out) == 0 else out

    def unique_params(self, N: ArrayLike, D_unique: ArrayLike) -> ArrayLike:
        """U_N = min(N, N such that D_unique is compute-optimal for it), i.e. (G·U_D)^(β/α)·G (Hoffmann eq. 4)."""
        base = self.base
        n_for_u = (np.asarray(D_unique, dtype=float) * base.G) ** (base.beta / base.alpha) * base.G
        out = np.minimum(np.asarray(N, dtype=float), n_for_u)
        return float(out) if np.ndim(out) == 0 else out

    def effective_params(self, N: ArrayLike, D_unique: ArrayLike) -> ArrayLike:
        """N': parameters beyond U_N count with decaying value, at rate R_N*."""
        UN = np.asarray(self.unique_params(N, D_unique), dtype=float)
        R = np.maximum(np.asarray(N, dtype=float) / UN - 1.0, 0.0)
        out = UN + UN * self.R_N_star * (1.0 - np.exp(-R / self.R_N_star))
        return float(out) if np.ndim(out) == 0 else out

    def effective_fraction(self, epochs: ArrayLike) -> ArrayLike:
        """D'/D after `epochs` passes over the unique data (1 at one epoch, → (1 + R_D*)/epochs for many)."""
        ep = np.asarray(epochs, dtype=float)
        out = self.effective_data(1.0, ep) / ep
        return float(out) if np.ndim(out) == 0 else out

    def loss(self, N: ArrayLike, D_unique: ArrayLike, epochs: ArrayLike | None = None,
             D_total: ArrayLike | None = None) -> ArrayLike:
        """Loss of N parameters trained on D_total tokens (= epochs·D_unique) drawn from D_unique unique tokens.

        Give exactly one of `epochs` and `D_total`; D_total < D_unique (less than one epoch) trains on D_total
        fresh tokens, as in the datablations README where U = min(U, D).
        """
        if (epochs is None) == (D_total is None):
            raise ScienceError("give exactly one of epochs and D_total", key="MuennighoffLaw.loss")
        U = np.asarray(D_unique, dtype=float)
        D = U * np.asarray(epochs, dtype=float) if D_total is None else np.asarray(D_total, dtype=float)
        U = np.minimum(U, D)
        b = self.base
        out = b.E + b.A / self.effective_params(N, U) ** b.alpha + b.B / self.effective_data(U, D) ** b.beta
        return float(out) if np.ndim(out) == 0 else out

    def optimal(self, C: float, D_unique: float) -> tuple[float, float]:
        """(N, D_total) minimising the loss under 6·N·D = C with D_unique unique tokens (1-D search in log N).

        The datablations README does a grid search instead; the minimum is the same to the grid's resolution.
        """
        from scipy.optimize import minimize_scalar

        s = C / 6.0

        def objective(log_n: float) -> float:
            n = math.exp(log_n)
            return float(self.loss(n, D_unique, D_total=s / n))

        n0, _ = self.base.optimal(C)
        lo, hi = math.log(n0) - 6.0, math.log(n0) + 6.0
        res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
        n = math.exp(res.x)
        return n, s / n

    def to_dict(self) -> dict[str, float]:
        return {**self.base.to_dict(), "R_D_star": float(self.R_D_star), "R_N_star": float(self.R_N_star)}


# ----------------------------------------------------------------------------- presets
# Sources, in docs/science.md ("Law presets"): Hoffmann et al. 2022 §3.3 (rounded, as the paper's body prints them);
# the unrounded values of the paper's TeX source, as Epoch AI's data_analysis.ipynb (`true_params`) quotes them;
# Epoch AI's published point estimate (Besiroglu et al. 2024, arXiv 2404.10102, its table of estimates; the unrounded
# log-space [a, b, e, α, β] of data_analysis.ipynb); Kaplan et al. 2020 eq. 1.5 and Table 2; Muennighoff et al.
# 2023's C4 fit [a, b, e, α, β, R_D*, R_N*] from the datablations README.

HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
HOFFMANN_TEX = ChinchillaLaw(E=1.69337368, A=406.401018, B=410.722827, alpha=0.33917084, beta=0.2849083)
EPOCH = ChinchillaLaw.from_log(6.17795598, 7.64273236, 0.59711196, 0.34781303, 0.36585412)
"""A = 482.006, B = 2085.434, E = 1.81686, α = 0.34781, β = 0.36585."""
KAPLAN = KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
MUENNIGHOFF = MuennighoffLaw(
    base=ChinchillaLaw.from_log(6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596),
    R_D_star=15.387756, R_N_star=5.309743)

PRESETS: Registry[Law] = Registry("law preset", {
    "hoffmann": HOFFMANN,
    "hoffmann-tex": HOFFMANN_TEX,
    "epoch": EPOCH,
    "kaplan": KAPLAN,
    "muennighoff": MUENNIGHOFF,
})

_CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
_MUENNIGHOFF_KEYS = ("R_D_star", "R_N_star")
_KAPLAN_KEYS = ("N_c", "D_c", "alpha_N", "alpha_D")
_ALL_KEYS = _CHINCHILLA_KEYS + _MUENNIGHOFF_KEYS + _KAPLAN_KEYS


def parse_law(text: str) -> Law:
    """A law from a preset name, `key=value,...` parameters, or a preset followed by overrides.

    Examples: `epoch`; `E=1.8,A=480,B=2100,alpha=0.35,beta=0.37` (Chinchilla); the same plus
    `R_D_star=..,R_N_star=..` (Muennighoff); `N_c=..,D_c=..,alpha_N=..,alpha_D=..` (Kaplan);
    `hoffmann-tex,E=1.8` (a preset with some values replaced). Raises ScienceError whose `key` names the bad key.
    """
    names = PRESETS.names()
    if not isinstance(text, str) or not text.strip():
        raise ScienceError(f"empty law; give a preset ({', '.join(names)}) or key=value,...", key="law")
    items = [item.strip() for item in text.split(",")]
    values: dict[str, float] = {}
    preset: str | None = None
    for i, item in enumerate(items):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            if i == 0 and key in PRESETS:
                preset = key
                continue
            if i == 0:
                raise ScienceError(f"unknown preset{did_you_mean(key, names)}; choose from {', '.join(names)} "
                                   "or give key=value,...", key=key or "law")
            raise ScienceError("expected key=value", key=key or "law")
        values[key] = _value(key, raw, values)
    if preset and not values:
        return PRESETS.get(preset)
    base: dict[str, float] = PRESETS.get(preset).to_dict() if preset else {}
    return law_from_dict({**base, **values}, preset=preset)


def _value(key: str, raw: str, seen: dict[str, float]) -> float:
    """The number given for `key` in a law's text, checked."""
    if key not in _ALL_KEYS:
        raise ScienceError(f"unknown key{did_you_mean(key, _ALL_KEYS)}", key=key or "law")
    if key in seen:
        raise ScienceError("given twice", key=key)
    try:
        value = float(raw)
    except ValueError:
        raise ScienceError(f"not a number: {raw.strip()!r}", key=key) from None
    if not math.isfinite(value):
        raise ScienceError(f"must be finite, got {raw.strip()}", key=key)
    if value < 0 or (value == 0 and key != "E"):
        raise ScienceError(f"must be {'>= 0' if key == 'E' else '> 0'}, got {raw.strip()}", key=key)
    return value


def law_from_dict(data: dict[str, Any], preset: str | None = None) -> Law:
    """The law whose `to_dict()` is `data`: Kaplan keys, Chinchilla keys, or Chinchilla + R_D*/R_N* keys."""
    keys = set(data)
    where = preset or "law"
    if keys & set(_KAPLAN_KEYS):
        _require(keys, _KAPLAN_KEYS, set(_CHINCHILLA_KEYS + _MUENNIGHOFF_KEYS), "Kaplan", where)
        return KaplanLaw(**{k: float(data[k]) for k in _KAPLAN_KEYS})
    if keys & set(_MUENNIGHOFF_KEYS):
        _require(keys, _CHINCHILLA_KEYS + _MUENNIGHOFF_KEYS, set(), "Muennighoff", where)
        base = ChinchillaLaw(**{k: float(data[k]) for k in _CHINCHILLA_KEYS})
        return MuennighoffLaw(base=base, R_D_star=float(data["R_D_star"]), R_N_star=float(data["R_N_star"]))
    _require(keys, _CHINCHILLA_KEYS, set(), "Chinchilla", where)
    return ChinchillaLaw(**{k: float(data[k]) for k in _CHINCHILLA_KEYS})


def _require(keys: set[str], needed: tuple[str, ...], forbidden: set[str], name: str, where: str) -> None:
    """Raise ScienceError on the first key that is foreign to, or missing from, a `name` law."""
    foreign = sorted(keys & forbidden) + sorted(keys - set(needed) - forbidden)
    if foreign:
        raise ScienceError(f"does not belong to a {name} law ({', '.join(needed)}; from {where})", key=foreign[0])
    missing = [key for key in needed if key not in keys]
    if missing:
        raise ScienceError(f"missing: a {name} law needs {', '.join(needed)}", key=missing[0])
