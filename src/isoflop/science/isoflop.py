"""Chinchilla's Approaches 1 and 2: compute-optimal N_opt ∝ C^a and D_opt ∝ C^b without a loss law.

Hoffmann et al. 2022 (arXiv 2203.15556):

- Approach 1 (§3.1, Fig. 2): for each FLOP level, the lowest loss over all training curves and the model
  size that reaches it; then N_opt ∝ C^a and D_opt ∝ C^b by least squares in log-log. Table 2 reports
  a = 0.50 (0.488, 0.502).
- Approach 2 (§3.2, Fig. 3): runs grouped into isoFLOP budgets; per budget a parabola of the loss in log N
  whose minimum gives N*(C), and D* = C/(6N*); then a and b by log-log regression over the budgets.
  Table 2 reports a = 0.49 (0.462, 0.534).

Ranges are bootstrap percentiles (Table 2 uses the 10th and 90th). Resampling draws with replacement, or,
with `subsample`, that fraction without replacement, as Hoffmann's Table 2 did (80 %, 100 times).
Approach 1 resamples whole curves; Approach 2 resamples points within each budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from isoflop.science.frontier import curve_values, monotone
from isoflop.science.records import Curve


class IsoflopError(ValueError):
    """Data that Approach 1 or 2 cannot use: one line naming the problem."""


@dataclass(frozen=True)
class Allocation:
    """N_opt = k_N·C^a and D_opt = k_D·C^b (C in FLOPs), from a least-squares fit in log-log."""

    a: float
    b: float
    k_N: float
    k_D: float
    a_range: tuple[float, float] | None = None
    """Bootstrap percentile range of a (None without bootstrap)."""
    b_range: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (10.0, 90.0)
    n_bootstrap: int = 0
    n_failed: int = 0
    """Resamples that could not be fitted (too few sizes left, or no minimum) and are left out of the ranges."""

    def N_opt(self, C: float | np.ndarray) -> float | np.ndarray:
        return self.k_N * np.asarray(C, dtype=float) ** self.a

    def D_opt(self, C: float | np.ndarray) -> float | np.ndarray:
        return self.k_D * np.asarray(C, dtype=float) ** self.b

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "k_N": self.k_N, "k_D": self.k_D,
                "a_range": list(self.a_range) if self.a_range else None,
                "b_range": list(self.b_range) if self.b_range else None,
                "percentiles": list(self.percentiles), "n_bootstrap": self.n_bootstrap, "n_failed": self.n_failed}


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class Envelope:
    """Approach 1: the lowest loss over all curves at each FLOP level, and who reaches it."""

    C: np.ndarray
    L: np.ndarray
    N: np.ndarray
    """Parameters of the curve reaching the lowest loss (N_opt at that level)."""
    D: np.ndarray
    """Its tokens at that level (C/(6N) when the curve has no token axis)."""
    curve: np.ndarray
    """Index of that curve in the input."""


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class EnvelopeFit:
    """Approach 1 (Hoffmann et al. 2022, §3.1)."""

    envelope: Envelope
    allocation: Allocation
    names: tuple[str, ...]

    @property
    def a(self) -> float:
        return self.allocation.a

    @property
    def b(self) -> float:
        return self.allocation.b

    def to_dict(self) -> dict:
        e = self.envelope
        return {**self.allocation.to_dict(),
                "envelope": {"C": e.C.tolist(), "L": e.L.tolist(), "N": e.N.tolist(), "D": e.D.tolist(),
                             "curve": [self.names[i] for i in e.curve]}}


@dataclass(frozen=True)
class Profile:
    """One isoFLOP budget: L ≈ c2·x² + c1·x + c0 with x = ln N (Hoffmann et al. 2022, §3.2)."""

    C: float
    """The budget: geometric mean of its runs' FLOPs."""
    coef: tuple[float, float, float]
    """(c2, c1, c0)."""
    N_opt: float
    D_opt: float
    """C / (6·N_opt)."""
    L_opt: float
    n_points: int
    interior: bool
    """Whether N_opt lies within the sizes trained; outside it the minimum is an extrapolation."""

    def loss(self, N: float | np.ndarray) -> float | np.ndarray:
        x = np.log(np.asarray(N, dtype=float))
        c2, c1, c0 = self.coef
        return (c2 * x + c1) * x + c0


@dataclass(frozen=True)
class Skipped:
    """A budget Approach 2 left out, and why."""

    C: float
    n_points: int
    reason: str


@dataclass(frozen=True)
class ProfileFit:
    """Approach 2 (Hoffmann et al. 2022, §3.2)."""

    profiles: tuple[Profile, ...]
    allocation: Allocation
    skipped: tuple[Skipped, ...]

    @property
    def a(self) -> float:
        return self.allocation.a

    @property
    def b(self) -> float:
        return self.allocation.b

    def to_dict(self) -> dict:
        return {**self.allocation.to_dict(),
                "profiles": [{"C": p.C, "coef": list(p.coef), "N_opt": p.N_opt, "D_opt": p.D_opt,
                              "L_opt": p.L_opt, "n_points": p.n_points, "interior": p.interior}
                             for p in self.profiles],
                "skipped": [vars(s) for s in self.skipped]}


# ---------------------------------------------------------------------------------------------- shared


def _slopes(log_c: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (slope, intercept) of log_y[..., g] on log_c[..., g] along the last axis."""
    xc = log_c - log_c.mean(axis=-1, keepdims=True)
    slope = (xc * log_y).sum(axis=-1) / (xc * xc).sum(axis=-1)
    return slope, log_y.mean(axis=-1) - slope * log_c.mean(axis=-1)


def _allocation(log_c: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> Allocation:
    if np.ptp(log_c) == 0:
        raise IsoflopError("all points share one compute budget: a slope in C needs at least two")
    a, ia = _slopes(log_c, log_n)
    b, ib = _slopes(log_c, log_d)
    return Allocation(float(a), float(b), float(np.exp(ia)), float(np.exp(ib)))


def _ranges(alloc: Allocation, a_boot: np.ndarray, b_boot: np.ndarray, n_boot: int,
            percentiles: tuple[float, float]) -> Allocation:
    ok = np.isfinite(a_boot) & np.isfinite(b_boot)
    if not ok.any():
        raise IsoflopError(f"bootstrap: none of the {n_boot} resamples could be fitted")
    return Allocation(alloc.a, alloc.b, alloc.k_N, alloc.k_D,
                      tuple(float(v) for v in np.percentile(a_boot[ok], percentiles)),
                      tuple(float(v) for v in np.percentile(b_boot[ok], percentiles)),
                      tuple(float(p) for p in percentiles), n_boot, int(n_boot - ok.sum()))


def _check_bootstrap(bootstrap: int, subsample: float | None, percentiles: tuple[float, float]) -> None:
    if bootstrap < 0:
        raise IsoflopError(f"bootstrap: {bootstrap} resamples is negative")
    if subsample is not None and not 0 < subsample < 1:
        raise IsoflopError(f"subsample: {subsample} is not a fraction in (0, 1)")
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise IsoflopError(f"percentiles: {percentiles} is not an increasing pair within [0, 100]")


def _draw(rng: np.random.Generator, n_boot: int, m: int, subsample: float | None) -> np.ndarray:
    """counts[r, i]: how often resample r takes item i of m."""
    if subsample is None:
        return rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot).astype(float)
    k = max(1, round(subsample * m))
    keys = rng.random((n_boot, m))
    return (np.argsort(np.argsort(keys, axis=1), axis=1) < k).astype(float)  # k random items per row


# ---------------------------------------------------------------------------------------------- Approach 1


def approach1(curves: Sequence[Curve], *, levels: int = 1000, min_curves: int = 2, bracketed: bool = True,
              smooth: int = 1, bootstrap: int = 0, subsample: float | None = None, seed: int = 0,
              percentiles: tuple[float, float] = (10.0, 90.0)) -> EnvelopeFit:
    """Approach 1 on training curves of several model sizes (each Curve needs N, and flops or tokens).

    The lowest loss is taken at `levels` log-spaced FLOP values spanning the curves, keeping only the
    levels where at least `min_curves` curves are defined (a level reached by one curve says nothing about
    the optimal size) and, with `bracketed`, where the winner is neither the smallest nor the largest size
    defined at that level (else the true optimum may lie beyond the sizes trained, which flattens the slope).
    Curves are interpolated in log FLOPs after a running minimum (frontier.monotone), without extending a
    curve past its end: a finished model is not a candidate at a larger budget.
    """
    _check_bootstrap(bootstrap, subsample, percentiles)
    if len(curves) < 2:
        raise IsoflopError(f"Approach 1 needs curves of at least 2 model sizes, got {len(curves)} curve(s)")
    if levels < 2 or min_curves < 1:
        raise IsoflopError(f"levels={levels}, min_curves={min_curves}: need levels >= 2 and min_curves >= 1")
    missing = [c.name for c in curves if c.N is None]
    if missing:
        raise IsoflopError(f"curve '{missing[0]}': no parameter count N")
    sizes = np.array([c.N for c in curves], dtype=float)
    if np.unique(sizes).size < 2:
        raise IsoflopError("Approach 1 needs at least 2 distinct model sizes; all curves have the same N")
    knots = [monotone(c.x("flops"), c.loss, smooth=smooth, name=c.name) for c in curves]
    lo, hi = min(x[0] for x, _ in knots), max(x[-1] for x, _ in knots)
    grid = np.linspace(lo, hi, levels)
    values = curve_values(knots, grid, hold=False)
    keep = np.isfinite(values).sum(axis=0) >= min_curves
    if keep.sum() < 2:
        raise IsoflopError(f"fewer than 2 FLOP levels are reached by {min_curves} curves: the curves do not overlap")
    grid, values = grid[keep], values[:, keep]

    # tokens along each curve, at the levels, in log FLOPs (D = C/(6N) when the curve has no token axis)
    log_tokens = np.full_like(values, np.nan)
    for k, c in enumerate(curves):
        if "tokens" in c.cost:
            order = np.argsort(c.x("flops"))
            log_tokens[k] = np.interp(grid, np.log(c.x("flops")[order]), np.log(c.cost["tokens"][order]))
        else:
            log_tokens[k] = grid - np.log(6.0 * c.N)

    def fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        sub = values[rows]
        defined = np.isfinite(sub)
        ok = defined.sum(axis=0) >= min_curves
        best = rows[np.argmin(np.where(defined, sub, np.inf), axis=0)]
        if bracketed:
            # the winner must have a smaller and a larger size beside it at that level, or the optimum
            # may lie outside the sizes there: the envelope is then censored, and a slope through it biased
            n_def = np.where(defined, sizes[rows][:, None], np.nan)
            with np.errstate(invalid="ignore"):
                ok &= (np.nanmin(n_def, axis=0, initial=np.inf) < sizes[best]) & (
                    sizes[best] < np.nanmax(n_def, axis=0, initial=-np.inf))
        if ok.sum() < 2:
            return None
        return ok, best[ok], np.log(sizes[best[ok]]), log_tokens[best[ok], np.flatnonzero(ok)]

    everything = fit(np.arange(len(curves)))
    if everything is None:
        raise IsoflopError("fewer than 2 FLOP levels have their lowest loss bracketed by a smaller and a larger "
                           "model: train sizes on both sides of the optimum, or pass bracketed=False")
    ok, best, log_n, log_d = everything
    alloc = _allocation(grid[ok], log_n, log_d)
    envelope = Envelope(np.exp(grid[ok]), values[best, np.flatnonzero(ok)], sizes[best], np.exp(log_d), best)
    if bootstrap:
        rng = np.random.default_rng(seed)
        counts = _draw(rng, bootstrap, len(curves), subsample)
        a_boot, b_boot = np.full(bootstrap, np.nan), np.full(bootstrap, np.nan)
        for r in range(bootstrap):
            rows = np.flatnonzero(counts[r])  # a curve drawn twice leaves the envelope unchanged
            if np.unique(sizes[rows]).size < 2 or (res := fit(rows)) is None:
                continue
            ok_r, _, log_n_r, log_d_r = res
            a_boot[r] = _slopes(grid[ok_r], log_n_r)[0]
            b_boot[r] = _slopes(grid[ok_r], log_d_r)[0]
        alloc = _ranges(alloc, a_boot, b_boot, bootstrap, percentiles)
    return EnvelopeFit(envelope, alloc, tuple(c.name for c in curves))


# ---------------------------------------------------------------------------------------------- Approach 2


def group_budgets(C: np.ndarray, *, rtol: float = 0.1) -> np.ndarray:
    """Budget label per point: points whose FLOPs lie within a factor (1 + rtol) of their group's smallest
    share a budget (sweeps hit a nominal budget only up to rounding of steps and batch)."""
    C = np.asarray(C, dtype=float)
    order = np.argsort(C, kind="stable")
    labels = np.empty(C.size, dtype=int)
    group, start = -1, -np.inf
    for i in order:
        if np.log(C[i]) - start > np.log1p(rtol):
            group, start = group + 1, np.log(C[i])
        labels[i] = group
    return labels


def _weighted_parabolas(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares parabolas y ≈ c2·u² + c1·u + c0 in u = x - mean(x), for each weight row.

    w is (R, m); returns coefficients (R, 3) as (c2, c1, c0) in u, and whether each system was solvable.
    The 3x3 normal equations of all rows are solved at once (a bootstrap is R parabola fits).
    """
    u = x - x.mean()
    powers = u[None, :] ** np.arange(5)[:, None]  # (5, m): u^0 .. u^4
    moments = w @ powers.T  # (R, 5)
    rhs = w @ (powers[:3] * y).T  # (R, 3): sums of w·y·u^0..2
    idx = np.array([[4, 3, 2], [3, 2, 1], [2, 1, 0]])
    lhs = moments[:, idx]  # unknowns ordered (c2, c1, c0)
    rhs = rhs[:, ::-1]
    ok = np.abs(np.linalg.det(lhs)) > 1e-12 * np.maximum(moments[:, 0], 1.0) ** 3 * max(np.ptp(u), 1e-300) ** 6
    lhs = np.where(ok[:, None, None], lhs, np.eye(3))
    return np.linalg.solve(lhs, rhs[..., None])[..., 0], ok


def isoflop_profile(N: np.ndarray, L: np.ndarray, C: float) -> Profile:
    """The parabola of L in ln N through one budget's runs, and its minimum."""
    N, L = np.asarray(N, dtype=float), np.asarray(L, dtype=float)
    x = np.log(N)
    coef, ok = _weighted_parabolas(x, L, np.ones((1, N.size)))
    if np.unique(N).size < 3 or not ok[0]:
        raise IsoflopError(f"budget C={C:.3g}: {np.unique(N).size} distinct sizes, a parabola needs 3")
    c2, c1, c0 = coef[0]
    if c2 <= 0:
        raise IsoflopError(f"budget C={C:.3g}: the loss is not convex in log N (no minimum)")
    m = x.mean()
    u_star = -c1 / (2 * c2)
    n_opt = float(np.exp(m + u_star))
    # back from u = x - m to x: c2·(x-m)² + c1·(x-m) + c0
    coef_x = (float(c2), float(c1 - 2 * c2 * m), float(c2 * m * m - c1 * m + c0))
    return Profile(float(C), coef_x, n_opt, float(C / (6.0 * n_opt)), float(c0 - c1 * c1 / (4 * c2)), int(N.size),
                   bool(N.min() <= n_opt <= N.max()))


def approach2(N: np.ndarray, C: np.ndarray, L: np.ndarray, *, rtol: float = 0.1, bootstrap: int = 0,
              subsample: float | None = None, seed: int = 0,
              percentiles: tuple[float, float] = (10.0, 90.0)) -> ProfileFit:
    """Approach 2 on runs (N parameters, C FLOPs, L loss) grouped into budgets by `group_budgets(C, rtol)`.

    Budgets with fewer than 3 distinct sizes, or whose parabola opens downward, are left out and listed in
    `skipped`; at least 2 budgets must remain. a comes from ln N* on ln C, b from ln D* on ln C (so
    a + b = 1, as D* = C/(6N*)). The bootstrap resamples points within each budget and refits every
    parabola; a resample where any budget loses its minimum counts as failed.
    """
    _check_bootstrap(bootstrap, subsample, percentiles)
    N, C, L = (np.asarray(v, dtype=float) for v in (N, C, L))
    if not (N.shape == C.shape == L.shape) or N.ndim != 1:
        raise IsoflopError("N, C and L must be 1-D arrays of one length")
    for name, v in (("N", N), ("C", C), ("L", L)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise IsoflopError(f"{name}: every value must be positive and finite")
    labels = group_budgets(C, rtol=rtol)
    profiles: list[Profile] = []
    skipped: list[Skipped] = []
    members: list[np.ndarray] = []
    for g in range(labels.max() + 1 if labels.size else 0):
        idx = np.flatnonzero(labels == g)
        budget = float(np.exp(np.log(C[idx]).mean()))
        try:
            profiles.append(isoflop_profile(N[idx], L[idx], budget))
            members.append(idx)
        except IsoflopError as e:
            skipped.append(Skipped(budget, int(idx.size), str(e).split(": ", 1)[1]))
    if len(profiles) < 2:
        raise IsoflopError(f"Approach 2 needs at least 2 budgets with 3+ sizes and a minimum; found "
                           f"{len(profiles)} of {len(profiles) + len(skipped)} (rtol={rtol})")
    log_c = np.log([p.C for p in profiles])
    log_n = np.log([p.N_opt for p in profiles])
    alloc = _allocation(log_c, log_n, log_c - np.log(6.0) - log_n)
    if bootstrap:
        rng = np.random.default_rng(seed)
        log_n_boot = np.empty((bootstrap, len(profiles)))
        good = np.ones(bootstrap, dtype=bool)
        for g, idx in enumerate(members):
            counts = _draw(rng, bootstrap, idx.size, subsample)
            x = np.log(N[idx])
            coef, ok = _weighted_parabolas(x, L[idx], counts)
            distinct = np.array([np.unique(x[row > 0]).size for row in counts]) >= 3
            good &= ok & distinct & (coef[:, 0] > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                log_n_boot[:, g] = x.mean() - coef[:, 1] / (2 * coef[:, 0])
        a_boot = np.where(good, _slopes(np.broadcast_to(log_c, log_n_boot.shape), log_n_boot)[0], np.nan)
        alloc = _ranges(alloc, a_boot, 1.0 - a_boot, bootstrap, percentiles)
    return ProfileFit(tuple(profiles), alloc, tuple(skipped))
