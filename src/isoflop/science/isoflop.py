"""Chinchilla's Approaches 1 and 2 (Hoffmann et al. 2022, arXiv 2203.15556): compute-optimal N_opt ∝ C^a and
D_opt ∝ C^b without a loss law, as estimators (`Approach1`, `Approach2`) that return a `ScalingFit`.

- Approach 1 (§3.1, Fig. 2): for each FLOP level, the lowest loss over all training curves and the model
  size that reaches it; then N_opt ∝ C^a and D_opt ∝ C^b by least squares in log-log. Table 2 reports
  a = 0.50 (0.488, 0.502).
- Approach 2 (§3.2, Fig. 3): runs grouped into isoFLOP budgets; per budget a parabola of the loss in log N
  whose minimum gives N*(C), and D* = C/(6N*); then a and b by log-log regression over the budgets.
  Table 2 reports a = 0.49 (0.462, 0.534).

With a `Bootstrap`, approach 1 resamples whole curves and approach 2 resamples runs within each budget (Table 2's
ranges are 10th-90th percentiles over 100 resamples of 80 % of the data: `Bootstrap(n=100, subsample=0.8)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from isoflop.science.bootstrap import Bootstrap, Intervals
from isoflop.science.errors import ScienceError
from isoflop.science.frontier import curve_values, monotone
from isoflop.science.records import Curve
from isoflop.science.result import ScalingFit


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class Envelope:
    """Approach 1's own detail: the lowest loss over all curves at each FLOP level used, and who reaches it."""

    C: np.ndarray
    L: np.ndarray
    N: np.ndarray
    """Parameters of the curve reaching the lowest loss (N_opt at that level)."""
    D: np.ndarray
    """Its tokens at that level (C/(6N) when the curve has no token axis)."""
    curve: np.ndarray
    """Index of that curve in the input."""
    names: tuple[str, ...]
    """The input curves' names."""

    def to_dict(self) -> dict:
        return {"n_curves": len(self.names),
                "envelope": {"C": self.C.tolist(), "L": self.L.tolist(), "N": self.N.tolist(), "D": self.D.tolist(),
                             "curve": [self.names[i] for i in self.curve]}}


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
class Profiles:
    """Approach 2's own detail: the isoFLOP profiles fitted, and the budgets left out."""

    profiles: tuple[Profile, ...]
    skipped: tuple[Skipped, ...]

    def to_dict(self) -> dict:
        return {"profiles": [{"C": p.C, "coef": list(p.coef), "N_opt": p.N_opt, "D_opt": p.D_opt,
                              "L_opt": p.L_opt, "n_points": p.n_points, "interior": p.interior}
                             for p in self.profiles],
                "skipped": [vars(s) for s in self.skipped]}


# ---------------------------------------------------------------------------------------------- shared


def _slopes(log_c: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (slope, intercept) of log_y[..., g] on log_c[..., g] along the last axis."""
    xc = log_c - log_c.mean(axis=-1, keepdims=True)
    slope = (xc * log_y).sum(axis=-1) / (xc * xc).sum(axis=-1)
    return slope, log_y.mean(axis=-1) - slope * log_c.mean(axis=-1)


def _allocation(log_c: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> tuple[float, float, float, float]:
    """(a, b, k_N, k_D) of least-squares lines ln N = ln k_N + a·ln C and ln D = ln k_D + b·ln C."""
    if np.ptp(log_c) == 0:
        raise ScienceError("all points share one compute budget: a slope in C needs at least two")
    a, ia = _slopes(log_c, log_n)
    b, ib = _slopes(log_c, log_d)
    return float(a), float(b), float(np.exp(ia)), float(np.exp(ib))


def _failures(intervals: Intervals | None) -> str:
    if intervals is None or not intervals.n_failed:
        return ""
    return f"; {intervals.n_failed} of {intervals.n} resamples could not be fitted and are left out of the intervals"


# ---------------------------------------------------------------------------------------------- Approach 1


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class _Levels:
    """Every curve at the common FLOP levels: values[k, g] is curve k's loss at exp(grid[g]) (NaN: undefined)."""

    grid: np.ndarray
    values: np.ndarray
    sizes: np.ndarray
    log_tokens: np.ndarray

    def winners(self, rows: np.ndarray, min_curves: int, bracketed: bool):
        """(levels kept, winning curve, its ln N, its ln D) over curves `rows`, or None below 2 levels; and the
        number of kept levels whose winner is the smallest or largest size defined there."""
        sub = self.values[rows]
        defined = np.isfinite(sub)
        ok = defined.sum(axis=0) >= min_curves
        best = rows[np.argmin(np.where(defined, sub, np.inf), axis=0)]
        # the winner must have a smaller and a larger size beside it at that level, or the optimum may lie
        # outside the sizes there: the envelope is then censored, and a slope through it biased
        n_def = np.where(defined, self.sizes[rows][:, None], np.nan)
        with np.errstate(invalid="ignore"):
            inside = (np.nanmin(n_def, axis=0, initial=np.inf) < self.sizes[best]) & (
                self.sizes[best] < np.nanmax(n_def, axis=0, initial=-np.inf))
        if bracketed:
            ok &= inside
        if ok.sum() < 2:
            return None
        at = np.flatnonzero(ok)
        return ok, best[ok], np.log(self.sizes[best[ok]]), self.log_tokens[best[ok], at], int(np.sum(~inside[ok]))


def _levels(curves: Sequence[Curve], levels: int, min_curves: int, smooth: int) -> _Levels:
    """Curves interpolated in log FLOPs after a running minimum (frontier.monotone), at `levels` log-spaced
    levels spanning them, keeping the levels at least `min_curves` curves reach; no curve is extended past its end
    (a finished model is not a candidate at a larger budget)."""
    if len(curves) < 2:
        raise ScienceError(f"Approach 1 needs curves of at least 2 model sizes, got {len(curves)} curve(s)")
    missing = [c.name for c in curves if c.N is None]
    if missing:
        raise ScienceError("no parameter count N", key=f"curve '{missing[0]}'")
    sizes = np.array([c.N for c in curves], dtype=float)
    if np.unique(sizes).size < 2:
        raise ScienceError("Approach 1 needs at least 2 distinct model sizes; all curves have the same N")
    knots = [monotone(c.x("flops"), c.loss, smooth=smooth, name=c.name) for c in curves]
    lo, hi = min(x[0] for x, _ in knots), max(x[-1] for x, _ in knots)
    grid = np.linspace(lo, hi, levels)
    values = curve_values(knots, grid, hold=False)
    keep = np.isfinite(values).sum(axis=0) >= min_curves
    if keep.sum() < 2:
        raise ScienceError(f"fewer than 2 FLOP levels are reached by {min_curves} curves: the curves do not overlap")
    grid, values = grid[keep], values[:, keep]
    # tokens along each curve, at the levels, in log FLOPs (D = C/(6N) when the curve has no token axis)
    log_tokens = np.full_like(values, np.nan)
    for k, c in enumerate(curves):
        if "tokens" in c.cost:
            order = np.argsort(c.x("flops"))
            log_tokens[k] = np.interp(grid, np.log(c.x("flops")[order]), np.log(c.cost["tokens"][order]))
        else:
            log_tokens[k] = grid - np.log(6.0 * c.N)
    return _Levels(grid, values, sizes, log_tokens)


@dataclass(frozen=True)
class Approach1:
    """Approach 1 on training curves of several model sizes (each Curve needs N, and flops or tokens):
    `Approach1(...).fit(curves)`.

    The lowest loss is taken at `levels` log-spaced FLOP values spanning the curves, keeping only the levels
    where at least `min_curves` curves are defined (a level reached by one curve says nothing about the optimal
    size) and, with `bracketed`, where the winner is neither the smallest nor the largest size defined at that
    level (else the true optimum may lie beyond the sizes trained, which flattens the slope). `smooth` averages
    that many neighbouring points of a curve before its running minimum.
    """

    levels: int = 1000
    min_curves: int = 2
    bracketed: bool = True
    smooth: int = 1
    bootstrap: Bootstrap | None = None

    def __post_init__(self) -> None:
        if self.levels < 2 or self.min_curves < 1:
            raise ScienceError(f"levels={self.levels}, min_curves={self.min_curves}: need levels >= 2 and "
                               "min_curves >= 1")

    def fit(self, curves: Sequence[Curve]) -> ScalingFit:
        lv = _levels(curves, self.levels, self.min_curves, self.smooth)
        everything = lv.winners(np.arange(len(curves)), self.min_curves, self.bracketed)
        if everything is None:
            raise ScienceError("fewer than 2 FLOP levels have their lowest loss bracketed by a smaller and a larger "
                               "model: train sizes on both sides of the optimum, or pass bracketed=False")
        ok, best, log_n, log_d, n_edge = everything
        a, b, k_N, k_D = _allocation(lv.grid[ok], log_n, log_d)
        envelope = Envelope(np.exp(lv.grid[ok]), lv.values[best, np.flatnonzero(ok)], lv.sizes[best],
                            np.exp(log_d), best, tuple(c.name for c in curves))
        intervals = None if self.bootstrap is None else self._resample(lv, len(curves))
        message = f"{int(ok.sum())} of {self.levels} FLOP levels used"
        if n_edge:
            message += (f"; at {n_edge} of them the smallest or largest size defined there has the lowest loss, so "
                        "the optimum may lie beyond the sizes trained and the slope is biased (bracketed=True "
                        "leaves them out)")
        return ScalingFit(approach=1, a=a, b=b, k_N=k_N, k_D=k_D, success=n_edge == 0,
                          message=message + _failures(intervals), n_points=int(ok.sum()), detail=envelope,
                          intervals=intervals)

    def _resample(self, lv: _Levels, n_curves: int) -> Intervals:
        """Resample whole curves; a curve drawn twice leaves the envelope unchanged."""
        boot = self.bootstrap
        counts = boot.counts(n_curves, boot.rng())
        a_boot, b_boot = np.full(int(boot.n), np.nan), np.full(int(boot.n), np.nan)
        for r in range(int(boot.n)):
            rows = np.flatnonzero(counts[r])
            if np.unique(lv.sizes[rows]).size < 2 or (res := lv.winners(rows, self.min_curves,
                                                                       self.bracketed)) is None:
                continue
            ok_r, _, log_n_r, log_d_r, _ = res
            a_boot[r] = _slopes(lv.grid[ok_r], log_n_r)[0]
            b_boot[r] = _slopes(lv.grid[ok_r], log_d_r)[0]
        return boot.summarise({"a": a_boot, "b": b_boot})


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
        raise ScienceError(f"{np.unique(N).size} distinct sizes, a parabola needs 3", key=f"budget C={C:.3g}")
    c2, c1, c0 = coef[0]
    if c2 <= 0:
        raise ScienceError("the loss is not convex in log N (no minimum)", key=f"budget C={C:.3g}")
    m = x.mean()
    u_star = -c1 / (2 * c2)
    n_opt = float(np.exp(m + u_star))
    # back from u = x - m to x: c2·(x-m)² + c1·(x-m) + c0
    coef_x = (float(c2), float(c1 - 2 * c2 * m), float(c2 * m * m - c1 * m + c0))
    return Profile(float(C), coef_x, n_opt, float(C / (6.0 * n_opt)), float(c0 - c1 * c1 / (4 * c2)), int(N.size),
                   bool(N.min() <= n_opt <= N.max()))


@dataclass(frozen=True)
class Approach2:
    """Approach 2 on runs (N parameters, C FLOPs, L loss) grouped into budgets by `group_budgets(C, rtol)`:
    `Approach2(...).fit(N, C, L)`.

    Budgets with fewer than 3 distinct sizes, or whose parabola opens downward, are left out and listed in the
    detail's `skipped`; at least 2 budgets must remain. a comes from ln N* on ln C, b from ln D* on ln C (so
    a + b = 1, as D* = C/(6N*)). The bootstrap resamples points within each budget and refits every parabola; a
    resample where any budget loses its minimum counts as failed. The fit is a success when every minimum lies
    within the sizes trained at its budget (elsewhere the vertex is an extrapolation).
    """

    rtol: float = 0.1
    bootstrap: Bootstrap | None = None

    def fit(self, N: np.ndarray, C: np.ndarray, L: np.ndarray) -> ScalingFit:
        N, C, L = (np.asarray(v, dtype=float) for v in (N, C, L))
        if not (N.shape == C.shape == L.shape) or N.ndim != 1:
            raise ScienceError("N, C and L must be 1-D arrays of one length")
        for name, v in (("N", N), ("C", C), ("L", L)):
            if not np.all(np.isfinite(v) & (v > 0)):
                raise ScienceError("every value must be positive and finite", key=name)
        profiles, skipped, members = _budgets(N, C, L, self.rtol)
        log_c = np.log([p.C for p in profiles])
        log_n = np.log([p.N_opt for p in profiles])
        a, b, k_N, k_D = _allocation(log_c, log_n, log_c - np.log(6.0) - log_n)
        intervals = None if self.bootstrap is None else self._resample(N, L, members, log_c)
        outside = [p for p in profiles if not p.interior]
        message = f"{len(profiles)} budgets fitted"
        if skipped:
            message += "; skipped " + ", ".join(f"C={s.C:.3g} ({s.reason})" for s in skipped)
        if outside:
            message += ("; the minimum lies outside the sizes trained (an extrapolation) at "
                        + ", ".join(f"C={p.C:.3g}" for p in outside))
        return ScalingFit(approach=2, a=a, b=b, k_N=k_N, k_D=k_D, success=not outside,
                          message=message + _failures(intervals), n_points=int(sum(m.size for m in members)),
                          detail=Profiles(tuple(profiles), tuple(skipped)), intervals=intervals)

    def _resample(self, N: np.ndarray, L: np.ndarray, members: list[np.ndarray], log_c: np.ndarray) -> Intervals:
        boot = self.bootstrap
        rng = boot.rng()
        log_n_boot = np.empty((int(boot.n), len(members)))
        good = np.ones(int(boot.n), dtype=bool)
        for g, idx in enumerate(members):
            counts = boot.counts(idx.size, rng)
            x = np.log(N[idx])
            coef, ok = _weighted_parabolas(x, L[idx], counts)
            distinct = np.array([np.unique(x[row > 0]).size for row in counts]) >= 3
            good &= ok & distinct & (coef[:, 0] > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                log_n_boot[:, g] = x.mean() - coef[:, 1] / (2 * coef[:, 0])
        a_boot = np.where(good, _slopes(np.broadcast_to(log_c, log_n_boot.shape), log_n_boot)[0], np.nan)
        return boot.summarise({"a": a_boot, "b": 1.0 - a_boot})


def _budgets(N: np.ndarray, C: np.ndarray, L: np.ndarray, rtol: float):
    """The profile of each budget with a minimum, the budgets skipped and why, and each profile's run indices."""
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
        except ScienceError as e:
            skipped.append(Skipped(budget, int(idx.size), e.problem))
    if len(profiles) < 2:
        raise ScienceError(f"Approach 2 needs at least 2 budgets with 3+ sizes and a minimum; found "
                           f"{len(profiles)} of {len(profiles) + len(skipped)} (rtol={rtol})")
    return profiles, skipped, members
