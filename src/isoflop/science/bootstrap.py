"""Bootstrap intervals for a Chinchilla Approach 3 fit (Epoch AI's procedure, Besiroglu et al. 2024; reference
§2.2): resample the runs with replacement, refit each resample with fit.py's objective and Newton polish, and
report standard errors and percentile intervals of the parameters and of D_opt/N_opt at chosen budgets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from isoflop.science.fit import ChinchillaFit, converged, fit_chinchilla, make_objective, polish, prepare
from isoflop.science.laws import ChinchillaLaw

KEYS = ("E", "A", "B", "alpha", "beta", "a", "b", "G")
"""The quantities a bootstrap reports, keyed as in ChinchillaFit.to_dict()."""


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Bootstrap over runs (resampled with replacement, refitted): standard errors and percentile intervals.

    `se` and `ci` are keyed like the fit (KEYS); `tokens_per_param` holds D_opt/N_opt at each budget, keyed
    by the budget written as `f"{C:.3g}"`, with the full fit's estimate, the bootstrap median, se and ci.
    """

    n: int
    seed: int
    level: float
    n_failed: int
    """Resamples whose refit did not pass the convergence test; they are left out of every statistic."""
    estimate: ChinchillaFit
    se: dict[str, float]
    ci: dict[str, tuple[float, float]]
    budgets: tuple[float, ...]
    tokens_per_param: dict[str, dict[str, Any]]
    samples: np.ndarray
    """(n − n_failed, len(KEYS)) refitted values, columns in KEYS order."""
    theta: np.ndarray
    """(n − n_failed, 5) refitted log-space [a, b, e, α, β]."""

    @property
    def cov_log(self) -> np.ndarray:
        """Covariance of the refitted log-space parameters (Epoch's basis for multivariate-normal bands)."""
        return np.cov(self.theta, rowvar=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        """JSON-ready summary; with `samples`, also the refitted E, A, B, alpha, beta as lists (for `plan --fit`)."""
        out = {"n": self.n, "seed": self.seed, "level": self.level, "n_failed": self.n_failed,
               "se": dict(self.se), "ci": {k: list(v) for k, v in self.ci.items()},
               "tokens_per_param": {k: {**v, "ci": list(v["ci"])} for k, v in self.tokens_per_param.items()}}
        if samples:
            out["samples"] = {k: self.samples[:, j].tolist() for j, k in enumerate(KEYS[:5])}
        return out


def bootstrap(N: Any, D: Any, L: Any, n: int = 1000, seed: int = 0,
              budgets: Sequence[float] = (1e21, 5.88e23, 1e25), *, fit: ChinchillaFit | None = None,
              start: ChinchillaLaw | None = None, loss: str = "huber", delta: float = 1e-3,
              drop_highest: int = 0, reduction: str | None = None, scale: float = 1.0, weight: float = 10.0,
              level: float = 0.95, max_iter: int = 1000, legacy_rng: bool = False) -> BootstrapResult:
    """Resample the runs n times with replacement and refit each resample (Epoch's procedure, reference §2.2).

    All resamples are refitted together as one batch (a resample is a row of point multiplicities), each
    starting from the full fit (`fit`, computed here if not given) or from `start` (Epoch started every
    refit from Hoffmann's TeX parameters). `legacy_rng` draws as Epoch's notebook does: numpy's legacy
    RandomState(seed).choice(n_points, n_points) per resample. Percentile intervals cover `level`.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n: need at least 2 resamples, got {n!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    N, D, L = prepare(N, D, L, drop_highest)
    if fit is None:
        fit = fit_chinchilla(N, D, L, loss=loss, delta=delta, reduction=reduction, scale=scale, weight=weight)
    m = len(L)
    if legacy_rng:
        rs = np.random.RandomState(seed)
        idx = np.stack([rs.choice(m, m) for _ in range(int(n))])
    else:
        idx = np.random.default_rng(seed).integers(0, m, size=(int(n), m))
    counts = np.zeros((int(n), m))
    np.add.at(counts, (np.arange(int(n))[:, None], idx), 1.0)
    obj = make_objective(N, D, L, loss, delta, reduction, scale, weight, counts=counts)
    x0 = np.tile(np.asarray(start.theta if start is not None else fit.theta), (int(n), 1))
    res, newton_len, _, _ = polish(obj, x0, max_iter)
    ok = converged(res.x, newton_len) & np.isfinite(res.f)
    if ok.sum() < 2:
        raise ValueError(f"bootstrap: only {int(ok.sum())} of {int(n)} refits converged")
    theta = res.x[ok]
    laws = ChinchillaLaw.from_log(*theta.T)  # broadcasts: numpy arrays in every field
    samples = np.stack([np.asarray(getattr(laws, k), dtype=float) for k in KEYS], axis=1)
    lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
    se = {k: float(np.std(samples[:, j], ddof=1)) for j, k in enumerate(KEYS)}
    ci = {k: (float(np.percentile(samples[:, j], lo_q)), float(np.percentile(samples[:, j], hi_q)))
          for j, k in enumerate(KEYS)}
    per_budget = {}
    for C in budgets:
        r = np.asarray(laws.tokens_per_param(C), dtype=float)
        per_budget[f"{C:.3g}"] = {
            "flops": float(C), "estimate": float(fit.law.tokens_per_param(C)), "median": float(np.median(r)),
            "se": float(np.std(r, ddof=1)),
            "ci": (float(np.percentile(r, lo_q)), float(np.percentile(r, hi_q)))}
    return BootstrapResult(n=int(n), seed=seed, level=level, n_failed=int(np.sum(~ok)), estimate=fit, se=se,
                           ci=ci, budgets=tuple(float(c) for c in budgets), tokens_per_param=per_budget,
                           samples=samples, theta=theta)
