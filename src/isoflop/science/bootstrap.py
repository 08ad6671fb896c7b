"""Bootstrap intervals for every fit: how resampling is configured (`Bootstrap`), drawn (`Bootstrap.counts`) and
summarised (`Intervals`).

Each approach resamples its own units and refits each resample (docs/science.md, "Intervals"): approach 1 whole
training curves, approach 2 runs within each isoFLOP budget, approach 3 runs (Besiroglu et al. 2024, arXiv
2404.10102, as their data_analysis.ipynb does it). Draws are with replacement, or with `subsample` that fraction
without replacement, which is how Hoffmann et al. 2022 (arXiv 2203.15556) made Table 2: 80 % of the data, 100
times. A resample is a row of multiplicities over the units, so a batch of resamples is one array.

DEFAULT_LEVEL is 0.8 for the whole package: Hoffmann et al.'s Table 2 gives 10th-90th percentiles, and Epoch AI
report their compute-optimal bands at 80 % (`conf_int_percentile = 80` in data_analysis.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from isoflop.science.errors import ScienceError
from isoflop.science.laws import ChinchillaLaw

DEFAULT_LEVEL = 0.8
"""Coverage of every interval unless asked otherwise: 10th to 90th percentile (see the module docstring)."""


@dataclass(frozen=True)
class Bootstrap:
    """How to resample a fit: `n` resamples, percentile intervals covering `level`, drawn from `seed`."""

    n: int = 1000
    level: float = DEFAULT_LEVEL
    seed: int = 0
    subsample: float | None = None
    """Draw this fraction of the units without replacement (Hoffmann's Table 2: 0.8) instead of all of them with."""
    legacy_rng: bool = False
    """Draw as Epoch's notebook does: numpy's legacy RandomState(seed).choice(m, m), one resample after another
    (with it, Epoch's bootstrap standard errors are reproduced to every printed digit)."""

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or int(self.n) != self.n or self.n < 2:
            raise ScienceError(f"need at least 2 resamples, got {self.n!r}", key="n")
        check_level(self.level)
        if self.subsample is not None and not 0 < self.subsample < 1:
            raise ScienceError(f"{self.subsample} is not a fraction in (0, 1)", key="subsample")
        if self.subsample is not None and self.legacy_rng:
            raise ScienceError("Epoch's legacy draw is with replacement; give one of them", key="subsample")

    @property
    def percentiles(self) -> tuple[float, float]:
        """(lower, upper) percentiles of a central `level` interval: (10, 90) at 0.8."""
        return ((100.0 - 100.0 * self.level) / 2.0, (100.0 + 100.0 * self.level) / 2.0)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def counts(self, m: int, rng: np.random.Generator, *, by_index: bool = False) -> np.ndarray:
        """(n, m) multiplicities: how often each resample takes each of m units.

        With replacement, a resample is one multinomial draw, or with `by_index` m uniform indices (approach 3's
        draw): the same distribution, each approach keeping its own stream so that a seed gives its usual
        resamples. `legacy_rng` and `subsample` override both.
        """
        n = int(self.n)
        if self.legacy_rng:
            rs = np.random.RandomState(self.seed)
            return _tally(np.stack([rs.choice(m, m) for _ in range(n)]), m)
        if self.subsample is not None:
            k = max(1, round(self.subsample * m))
            keys = rng.random((n, m))
            return (np.argsort(np.argsort(keys, axis=1), axis=1) < k).astype(float)  # k random units per row
        if by_index:
            return _tally(rng.integers(0, m, size=(n, m)), m)
        return rng.multinomial(m, np.full(m, 1.0 / m), size=n).astype(float)

    def summarise(self, values: Mapping[str, np.ndarray], *, theta: np.ndarray | None = None) -> Intervals:
        """Intervals from each resample's refitted `values` ({key: (n,)}, NaN where the refit failed)."""
        stacked = np.stack([np.asarray(v, dtype=float) for v in values.values()], axis=1)
        ok = np.all(np.isfinite(stacked), axis=1)
        if ok.sum() < 2:
            raise ScienceError(f"bootstrap: only {int(ok.sum())} of {int(self.n)} resamples could be fitted")
        samples = {k: np.asarray(v, dtype=float)[ok] for k, v in values.items()}
        lo_q, hi_q = self.percentiles
        se = {k: float(np.std(v, ddof=1)) for k, v in samples.items()}
        ci = {k: (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))) for k, v in samples.items()}
        return Intervals(bootstrap=self, n_failed=int(np.sum(~ok)), se=se, ci=ci, samples=samples,
                         theta=None if theta is None else np.asarray(theta)[ok])


def _tally(idx: np.ndarray, m: int) -> np.ndarray:
    counts = np.zeros((idx.shape[0], m))
    np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1.0)
    return counts


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class Intervals:
    """A bootstrap's result: percentile intervals `ci` at `level` and standard errors `se`, keyed like the fit's
    values ("a", "b"; approach 3 also "E", "A", "B", "alpha", "beta", "G"), over the resamples that refitted."""

    bootstrap: Bootstrap
    n_failed: int
    """Resamples that could not be refitted (too few sizes left, no minimum, no convergence): left out."""
    se: dict[str, float]
    ci: dict[str, tuple[float, float]]
    samples: dict[str, np.ndarray]
    """Each key's refitted values, one per successful resample."""
    theta: np.ndarray | None = None
    """Approach 3: (S, 5) refitted log-space [a, b, e, α, β] rows, in the order of `samples`."""

    @property
    def level(self) -> float:
        return self.bootstrap.level

    @property
    def n(self) -> int:
        return int(self.bootstrap.n)

    @property
    def cov_log(self) -> np.ndarray:
        """Covariance of the refitted [log A, log B, log E, α, β] (Epoch's basis for multivariate-normal bands)."""
        if self.theta is None:
            raise ScienceError("only a parametric (approach 3) bootstrap has log-space parameters", key="cov_log")
        return np.cov(self.theta, rowvar=False)

    def laws(self) -> ChinchillaLaw:
        """The refitted laws as one ChinchillaLaw with array fields (a batch of laws)."""
        if self.theta is None:
            raise ScienceError("only a parametric (approach 3) bootstrap has laws", key="laws")
        return ChinchillaLaw.from_log(*self.theta.T)

    def band(self, values: np.ndarray) -> dict[str, Any]:
        """Median, standard error and `level` interval of a quantity derived from each resample."""
        values = np.asarray(values, dtype=float)
        lo_q, hi_q = self.bootstrap.percentiles
        return {"median": float(np.median(values)), "se": float(np.std(values, ddof=1)),
                "ci": (float(np.percentile(values, lo_q)), float(np.percentile(values, hi_q)))}

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        """JSON-ready; with `samples`, also each key's refitted values as lists (`isoflop plan --fit` reads them)."""
        b = self.bootstrap
        out: dict[str, Any] = {"method": "bootstrap", "level": b.level, "n": int(b.n), "seed": b.seed,
                               "subsample": b.subsample, "legacy_rng": b.legacy_rng, "n_failed": self.n_failed,
                               "se": dict(self.se), "ci": {k: list(v) for k, v in self.ci.items()}}
        if samples:
            out["samples"] = {k: v.tolist() for k, v in self.samples.items()}
        return out


def check_level(level: float) -> float:
    """`level` if it is a valid interval coverage, else ScienceError."""
    if isinstance(level, bool) or not (isinstance(level, (int, float)) and math.isfinite(level) and 0 < level < 1):
        raise ScienceError(f"must be in (0, 1), got {level!r}", key="level")
    return float(level)
