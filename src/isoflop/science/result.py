"""One result type for Chinchilla's three approaches (Hoffmann et al. 2022, arXiv 2203.15556, §3).

Every estimator (`Approach1`, `Approach2` in isoflop.py, `Approach3` in fit.py) returns a `ScalingFit`: the
allocation exponents and prefactors N_opt = k_N·C^a, D_opt = k_D·C^b, the fitted law (approach 3 only), bootstrap
intervals at one level (bootstrap.DEFAULT_LEVEL unless asked), whether the method delivered what it promises and
why not, the points used, and the approach's own detail (the envelope, the isoFLOP profiles, or the optimiser's
diagnostics) in a typed field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from isoflop.science.bootstrap import Intervals
from isoflop.science.laws import ChinchillaLaw

if TYPE_CHECKING:
    from isoflop.science.fit import Parametric
    from isoflop.science.isoflop import Envelope, Profiles

DEFAULT_BUDGETS = (1e21, 5.88e23, 1e25)
"""Budgets (FLOPs) at which a fit reports D_opt/N_opt: 1e21, Chinchilla's own 6·70e9·1.4e12 = 5.88e23, and 1e25."""


def budget_key(C: float) -> str:
    """How a budget is written as a JSON key: `f"{C:g}"`, e.g. "5.88e+23"."""
    return f"{C:g}"


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class ScalingFit:
    """The compute-optimal allocation N_opt = k_N·C^a, D_opt = k_D·C^b (C in FLOPs) that one approach found."""

    approach: int
    """1: envelope of training curves; 2: isoFLOP profiles; 3: parametric loss fit."""
    a: float
    b: float
    k_N: float
    k_D: float
    success: bool
    """Whether the estimate is what the method promises: approach 3 converged; every isoFLOP minimum of approach 2
    lies within the sizes trained; approach 1's envelope is bracketed by smaller and larger models."""
    message: str
    """Why not, or what was used and left out (skipped budgets, unbracketed levels, failed resamples)."""
    n_points: int
    """What the estimate rests on: runs fitted (approach 3), runs in the budgets fitted (approach 2), FLOP levels
    of the envelope (approach 1)."""
    detail: Envelope | Profiles | Parametric
    law: ChinchillaLaw | None = None
    """The fitted loss law (approach 3); approaches 1 and 2 fit no law."""
    intervals: Intervals | None = None
    """Bootstrap intervals at `intervals.level`, None without a bootstrap."""

    def N_opt(self, C: float | np.ndarray) -> float | np.ndarray:
        if self.law is not None:
            return self.law.optimal(C)[0]
        return self.k_N * np.asarray(C, dtype=float) ** self.a

    def D_opt(self, C: float | np.ndarray) -> float | np.ndarray:
        if self.law is not None:
            return self.law.optimal(C)[1]
        return self.k_D * np.asarray(C, dtype=float) ** self.b

    def tokens_per_param(self, C: float | np.ndarray) -> float | np.ndarray:
        if self.law is not None:
            return self.law.tokens_per_param(C)
        return self.D_opt(C) / self.N_opt(C)

    def tokens_per_param_bands(self, budgets: Sequence[float] = DEFAULT_BUDGETS) -> dict[str, dict[str, Any]]:
        """D_opt/N_opt at each budget: the estimate, and with a parametric bootstrap the median, se and interval
        over the refitted laws; keyed by `budget_key`."""
        out = {}
        laws = self.intervals.laws() if self.intervals is not None and self.intervals.theta is not None else None
        for C in budgets:
            entry: dict[str, Any] = {"flops": float(C), "estimate": float(self.tokens_per_param(C))}
            if laws is not None:
                entry.update(self.intervals.band(laws.tokens_per_param(C)))
            out[budget_key(C)] = entry
        return out

    def to_dict(self, budgets: Sequence[float] = DEFAULT_BUDGETS, samples: bool = False) -> dict[str, Any]:
        """JSON-ready, the keys common to every approach first, then the approach's detail.

        `law` names the law's form ("chinchilla") with its parameters at the top level, or is None. `intervals`
        summarises the bootstrap. Keys that `isoflop fit --json` wrote before `intervals` existed stay, so older
        scripts and `isoflop plan --fit` read new files: `a_range`, `b_range`, `percentiles`, `n_bootstrap`,
        `n_failed` (approaches 1, 2); `se`, `ci` and `bootstrap` (approach 3; with `samples`, `bootstrap.samples`
        holds the refitted laws, from which the planner draws its intervals).
        """
        out: dict[str, Any] = {
            "approach": self.approach, "law": None if self.law is None else "chinchilla", "a": self.a, "b": self.b,
            "k_N": self.k_N, "k_D": self.k_D, "success": self.success, "message": self.message,
            "n_points": self.n_points, "intervals": None if self.intervals is None else self.intervals.to_dict()}
        if self.law is not None:
            out.update(self.law.to_dict(), G=self.law.G)
        out.update(self.detail.to_dict())
        bands = self.tokens_per_param_bands(budgets)
        out["tokens_per_param"] = {k: v["estimate"] for k, v in bands.items()}
        out.update(self._older_keys(bands, samples))
        return out

    def _older_keys(self, bands: dict[str, dict[str, Any]], samples: bool) -> dict[str, Any]:
        iv = self.intervals
        if self.approach in (1, 2):
            return {"a_range": list(iv.ci["a"]) if iv else None, "b_range": list(iv.ci["b"]) if iv else None,
                    "percentiles": list(iv.bootstrap.percentiles) if iv else [10.0, 90.0],
                    "n_bootstrap": iv.n if iv else 0, "n_failed": iv.n_failed if iv else 0}
        if iv is None:
            return {}
        boot: dict[str, Any] = {"n": iv.n, "seed": iv.bootstrap.seed, "level": iv.level, "n_failed": iv.n_failed,
                                "se": dict(iv.se), "ci": {k: list(v) for k, v in iv.ci.items()},
                                "tokens_per_param": {k: {**v, "ci": list(v["ci"])} for k, v in bands.items()}}
        if samples:
            boot["samples"] = {k: iv.samples[k].tolist() for k in ("E", "A", "B", "alpha", "beta")}
        return {"se": dict(iv.se), "ci": {k: list(v) for k, v in iv.ci.items()}, "bootstrap": boot}
