"""Intervals of a compute-optimal plan from a fitted law's parameter uncertainty (`isoflop plan --fit`).

By default Epoch AI's method (Besiroglu et al. 2024, arXiv 2404.10102; data_analysis.ipynb): 10,000 draws from a
multivariate normal centred on the point estimate of θ = (log A, log B, log E, α, β), with the covariance of the
bootstrap fits' θ, then percentiles of each derived quantity (N_opt, D_opt, D/N, loss, a, b) at the level asked,
bootstrap.DEFAULT_LEVEL (80 %, as Epoch report their bands) unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from isoflop.science.bootstrap import DEFAULT_LEVEL, check_level
from isoflop.science.compute_optimal import chinchilla_form, compute_optimal
from isoflop.science.errors import ScienceError
from isoflop.science.laws import ChinchillaLaw, Law

PARAMS = ("E", "A", "B", "alpha", "beta")
INDEPENDENT_NOTE = ("standard errors only: the correlations between A, B, alpha and beta are ignored, which "
                    "typically widens the band several-fold; give a fit with bootstrap samples")


def _params(law: Law) -> np.ndarray:
    form = chinchilla_form(law)
    return np.array([float(getattr(form, k)) for k in PARAMS])


@dataclass(frozen=True)
class Uncertainty:
    """Parameter uncertainty of a fitted law, and how to carry it into a plan.

    method
        mvn          (default with bootstrap samples) Epoch AI's: draws from N(θ̂, Σ) with θ = (log A, log B,
                     log E, α, β), θ̂ the point estimate and Σ the covariance of the bootstrap fits' θ; keeps the
                     strong correlations between A, B, α and β that set the width of the band.
        percentile   the bootstrap fits themselves, each giving one allocation.
        independent  only standard errors are known: independent normals on θ (sd of log A = se_A/A, ...).
                     It ignores the correlations, which typically widens the band several-fold (on Epoch's
                     fit, D/N at 5.88e23: 0.7-511 against 10.7-31.7 with the bootstrap covariance); the plan
                     says so in a `note`. Prefer a fit with samples.
    """

    samples: np.ndarray | None = None
    """(S, 5) bootstrap fits, columns (E, A, B, alpha, beta)."""
    cov_log: np.ndarray | None = None
    """(5, 5) covariance of the bootstrap fits' (log A, log B, log E, α, β); computed from `samples` if None."""
    se: Mapping[str, float] | None = None
    ci: Mapping[str, tuple[float, float]] | None = None
    method: str = "mvn"

    def draws(self, law: Law, n: int = 10_000, seed: int = 0) -> np.ndarray:
        """(n', 5) parameter sets (E, A, B, alpha, beta) with alpha, beta > 0."""
        point = _params(law)
        rng = np.random.default_rng(seed)
        if self.method == "percentile" and self.samples is not None:
            out = np.asarray(self.samples, dtype=float)
        elif self.method in ("mvn", "independent"):
            mean = _to_theta(point[None])[0]
            if self.method == "mvn" and self.cov_log is not None:
                cov = np.asarray(self.cov_log, dtype=float)
            elif self.method == "mvn" and self.samples is not None:
                cov = np.cov(_to_theta(np.asarray(self.samples, dtype=float)), rowvar=False)
            elif self.se is not None and all(k in self.se for k in PARAMS):
                E, A, B = point[:3]
                sd = [self.se["A"] / A, self.se["B"] / B, self.se["E"] / E, self.se["alpha"], self.se["beta"]]
                cov = np.diag(np.square(sd))
            else:
                raise ScienceError(f"method {self.method!r} needs cov_log, samples or se of {PARAMS}", key="uncertainty")
            out = _from_theta(rng.multivariate_normal(mean, cov, size=n, method="svd"))
        else:
            raise ScienceError(f"unknown method {self.method!r} (mvn, percentile, independent)", key="uncertainty")
        return out[(out[:, 3] > 0) & (out[:, 4] > 0) & np.all(np.isfinite(out), axis=1)]


def _to_theta(p: np.ndarray) -> np.ndarray:
    return np.stack([np.log(p[:, 1]), np.log(p[:, 2]), np.log(p[:, 0]), p[:, 3], p[:, 4]], axis=1)


def _from_theta(t: np.ndarray) -> np.ndarray:
    return np.stack([np.exp(t[:, 2]), np.exp(t[:, 0]), np.exp(t[:, 1]), t[:, 3], t[:, 4]], axis=1)


def allocation_curve(law: Law, flops: Sequence[float] | np.ndarray, uncertainty: Uncertainty | None = None,
                     level: float = DEFAULT_LEVEL, n_draws: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """N_opt, D_opt, tokens_per_param and loss at each budget; with `uncertainty`, also `<key>_lo`, `<key>_hi`
    and `<key>_median` (percentiles (1 ∓ level)/2 and 0.5 over the parameter draws) and `a_lo`, `a_hi`, ..."""
    C = np.asarray(flops, dtype=float)
    if not (np.all(np.isfinite(C)) and np.all(C > 0)):
        raise ScienceError("must be positive finite numbers", key="flops")
    plans = [compute_optimal(law, c) for c in C]
    out: dict[str, Any] = {"flops": C}
    for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
        out[key] = np.array([getattr(p, key) for p in plans])
    if uncertainty is None:
        return out
    check_level(level)
    p = uncertainty.draws(law, n_draws, seed)
    if len(p) < 2:
        raise ScienceError("fewer than 2 usable parameter draws", key="uncertainty")
    laws = ChinchillaLaw(**{k: p[:, i : i + 1] for i, k in enumerate(PARAMS)})  # a batch: (n, 1) fields
    N, D = laws.optimal(C[None, :])
    derived = {"N_opt": N, "D_opt": D, "tokens_per_param": D / N, "loss": laws.loss(N, D), "a": laws.a[:, 0],
               "b": laws.b[:, 0]}
    q = [(1 - level) / 2, 0.5, (1 + level) / 2]
    for key, values in derived.items():
        lo, med, hi = np.quantile(values, q, axis=0)
        out[f"{key}_lo"], out[f"{key}_median"], out[f"{key}_hi"] = lo, med, hi
    out.update(level=level, method=uncertainty.method, n_draws=len(p))
    return out


def budget_intervals(law: Law, flops: float, uncertainty: Uncertainty, level: float = DEFAULT_LEVEL,
                     n_draws: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """The intervals of one budget as plain floats: {key: [lo, hi]} plus median, level, method and draws."""
    curve = allocation_curve(law, [flops], uncertainty, level, n_draws, seed)
    out: dict[str, Any] = {"level": level, "method": uncertainty.method, "n_draws": curve["n_draws"]}
    for key in ("N_opt", "D_opt", "tokens_per_param", "loss", "a", "b"):
        lo, hi, med = (float(np.ravel(curve[f"{key}_{s}"])[0]) for s in ("lo", "hi", "median"))
        out[key] = [lo, hi]
        out[f"{key}_median"] = med
    if uncertainty.method == "independent":
        out["note"] = INDEPENDENT_NOTE
    if uncertainty.ci:
        out["fit_ci"] = {k: list(v) for k, v in uncertainty.ci.items()}
    return out


def law_from_fit(fit: Mapping[str, Any]) -> tuple[ChinchillaLaw, Uncertainty | None]:
    """A law (and its uncertainty, if bootstrapped) from `isoflop fit --json` output: E, A, B, alpha, beta at
    the top level. Uncertainty, at the top level or under `bootstrap` (first found wins):
    `cov_log` (5 x 5 covariance of the refits' [log A, log B, log E, α, β]), `theta` (refits' log-space rows
    [a, b, e, α, β]) or `samples` (refits: a list of {E, A, B, alpha, beta} objects, an object of lists, or rows
    whose first five columns are E, A, B, alpha, beta) give the MVN band; `se` alone the independent one;
    `ci` is passed through."""
    if not isinstance(fit, Mapping):
        raise ScienceError("expected a JSON object", key="fit")
    if fit.get("approach") in (1, 2):
        raise ScienceError(f"approach {fit['approach']} fits no loss law; plan from an approach 3 fit", key="fit")
    values = {}
    for key in PARAMS:
        value = fit.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScienceError("missing or not a finite number in the fit", key=key)
        values[key] = float(value)
    law = ChinchillaLaw(**values)
    places = [fit] + ([fit["bootstrap"]] if isinstance(fit.get("bootstrap"), Mapping) else [])

    def find(key: str) -> Any:
        return next((place[key] for place in places if place.get(key) is not None), None)

    samples, theta, cov = find("samples"), find("theta"), find("cov_log")
    array = None
    if theta is not None:
        array = _from_theta(_matrix("theta", theta, 5))
    elif samples is not None:
        array = _samples_array(samples)
    cov_log = _matrix("cov_log", cov, 5) if cov is not None else None
    if cov_log is not None and cov_log.shape != (5, 5):
        raise ScienceError("expected a 5 x 5 matrix", key="cov_log")
    se = find("se")
    se = {k: float(v) for k, v in se.items() if isinstance(v, (int, float))} if isinstance(se, Mapping) else None
    ci = {k: (float(v[0]), float(v[1])) for k, v in _ci_items(find("ci"))} or None
    if cov_log is not None or (array is not None and len(array) >= 2):
        return law, Uncertainty(samples=array, cov_log=cov_log, se=se, ci=ci, method="mvn")
    if se is not None and all(k in se for k in PARAMS):
        return law, Uncertainty(se=se, ci=ci, method="independent")
    return law, None


def _matrix(key: str, value: Any, columns: int) -> np.ndarray:
    try:
        array = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise ScienceError(f"expected rows of {columns} numbers", key=key) from None
    if array.ndim != 2 or array.shape[1] != columns or not np.all(np.isfinite(array)):
        raise ScienceError(f"expected finite rows of {columns} numbers", key=key)
    return array


def _samples_array(samples: Any) -> np.ndarray:
    try:
        if isinstance(samples, Mapping):
            array = np.array([samples[k] for k in PARAMS], dtype=float).T
        elif len(samples) and isinstance(samples[0], Mapping):
            array = np.array([[s[k] for k in PARAMS] for s in samples], dtype=float)
        else:  # rows, first five columns (E, A, B, alpha, beta), as fit.KEYS orders them
            array = np.array(samples, dtype=float)[:, :5]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ScienceError(f"expected bootstrap fits with keys {', '.join(PARAMS)} ({e})", key="samples") from None
    if array.ndim != 2 or array.shape[1] != 5 or not np.all(np.isfinite(array)):
        raise ScienceError("expected finite bootstrap fits, one row of (E, A, B, alpha, beta) each", key="samples")
    return array


def _ci_items(ci: Any) -> Iterable[tuple[str, Sequence[float]]]:
    if not isinstance(ci, Mapping):
        return []
    items = []
    for key, value in ci.items():
        if isinstance(value, Mapping):
            value = (value.get("lo", value.get("low")), value.get("hi", value.get("high")))
        if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            items.append((key, value))
    return items
