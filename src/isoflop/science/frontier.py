"""The loss-vs-cost Pareto frontier of several models' training curves, and where the lead changes.

"Chinchilla's death" (espadrine.github.io, 2023-07-23, with digitised curves in espadrine/espadrine.github.com,
blog/assets/chinchilla-s-death/) plots LLaMA training loss against GPU-hours and argues that a smaller model first leads, is overtaken by a larger one, and may
overtake it again. This module makes that reading exact for any cost axis (FLOPs, tokens, wall time,
GPU-hours): the lower envelope over all curves, the model that leads on each cost interval, and the
crossovers between curves.

Choices, and why:

- Curves are interpolated linearly in log cost: loss curves are close to straight there, and the knots of
  every curve are kept, so a crossover between two piecewise-linear curves is found exactly, not on a grid.
- Each curve is first sorted by cost (digitised curves are not in x order) and replaced by its running
  minimum: the best loss reached at a cost no greater than c, i.e. the best checkpoint so far. That makes a
  noisy, non-monotone curve monotone without moving its trend; `smooth` > 1 averages that many neighbouring
  points first, because a running minimum of raw noise drifts low.
- `hold=True` (default) keeps a finished curve at its last (best) loss beyond its end: with a budget past a
  run's end one can still use that run, which is what a Pareto frontier means. Before a curve's first point
  nothing is known about it, so it is absent there (digitised curves are clipped at the start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from isoflop.science.errors import ScienceError
from isoflop.science.records import Curve


@dataclass(frozen=True)
class Crossover:
    """A change of the lower curve at `cost`: `before` led just below it, `after` leads just above."""

    cost: float
    loss: float
    before: str
    after: str
    kind: str
    """"cross" (the curves intersect), "entry" (`after` starts below `before`), "exit" (`before` ends)."""
    larger_wins: bool | None
    """True when `after` has more parameters than `before`; None when a size is unknown."""


@dataclass(frozen=True)
class Segment:
    """`leader` has the lowest loss for every cost in [cost_lo, cost_hi]."""

    leader: str
    cost_lo: float
    cost_hi: float


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class Frontier:
    """The lower envelope of several loss-vs-cost curves."""

    axis: str
    names: tuple[str, ...]
    cost: np.ndarray
    """Breakpoints, ascending: every curve's knots and every crossing."""
    loss: np.ndarray
    """The envelope (lowest loss over all curves) at each breakpoint; NaN where no curve is defined."""
    leader: np.ndarray
    """Index into `names` of the curve that leads on (cost[k], cost[k+1]); -1 where no curve is defined."""
    segments: tuple[Segment, ...]
    crossovers: tuple[Crossover, ...]
    """Changes of leader along the frontier."""
    pairwise: tuple[Crossover, ...]
    """Every crossing between two curves, on or off the frontier, by cost."""

    def leader_at(self, cost: float) -> str | None:
        """The leading curve's name at `cost`, or None outside every curve."""
        for seg in self.segments:
            if seg.cost_lo <= cost <= seg.cost_hi:
                return seg.leader
        return None

    def to_dict(self) -> dict:
        return {
            "axis": self.axis,
            "segments": [vars(s) for s in self.segments],
            "crossovers": [vars(c) for c in self.crossovers],
            "pairwise": [vars(c) for c in self.pairwise],
            "cost": self.cost.tolist(),
            "loss": self.loss.tolist(),
        }


# ---------------------------------------------------------------------------------------------- curves


def monotone(cost: np.ndarray, loss: np.ndarray, *, smooth: int = 1, name: str = "curve"
             ) -> tuple[np.ndarray, np.ndarray]:
    """(log cost, running-minimum loss): sorted by cost, equal costs merged (lowest loss), optionally
    smoothed by a centred moving average over `smooth` points, then made non-increasing."""
    cost, loss = np.asarray(cost, dtype=float), np.asarray(loss, dtype=float)
    if cost.shape != loss.shape or cost.ndim != 1:
        raise ScienceError("cost and loss must be 1-D arrays of one length", key=name)
    if cost.size == 0:
        raise ScienceError("no points", key=name)
    if not (np.all(np.isfinite(cost)) and np.all(cost > 0)):
        raise ScienceError("costs must be positive and finite (they are interpolated in log cost)", key=name)
    if not np.all(np.isfinite(loss)):
        raise ScienceError("a loss is not finite", key=name)
    if smooth < 1:
        raise ScienceError(f"{smooth} is not a window of at least 1 point", key="smooth")
    order = np.argsort(cost, kind="stable")
    cost, loss = cost[order], loss[order]
    unique, start = np.unique(cost, return_index=True)
    loss = np.minimum.reduceat(loss, start)
    if smooth > 1 and loss.size > 1:
        half = smooth // 2
        sums = np.concatenate([[0.0], np.cumsum(loss)])
        lo = np.maximum(np.arange(loss.size) - half, 0)
        hi = np.minimum(np.arange(loss.size) + half + 1, loss.size)
        loss = (sums[hi] - sums[lo]) / (hi - lo)
    return np.log(unique), np.minimum.accumulate(loss)


def curve_values(knots: Sequence[tuple[np.ndarray, np.ndarray]], log_grid: np.ndarray, *, hold: bool
                 ) -> np.ndarray:
    """values[k, g]: curve k (log cost, loss knots) at log_grid[g], linear in log cost; NaN where undefined
    (before the first knot; after the last unless `hold`)."""
    values = np.full((len(knots), log_grid.size), np.nan)
    for k, (x, y) in enumerate(knots):
        v = np.interp(log_grid, x, y)
        inside = (log_grid >= x[0]) & ((log_grid <= x[-1]) | hold)
        values[k, inside] = v[inside]
    return values


def _prepare(curves: Sequence[Curve], axis: str, smooth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if not curves:
        raise ScienceError("no curves")
    names = [c.name for c in curves]
    if len(set(names)) < len(names):
        raise ScienceError(f"curve name '{next(n for n in names if names.count(n) > 1)}' is used twice")
    return [monotone(c.x(axis), c.loss, smooth=smooth, name=c.name) for c in curves]


# ---------------------------------------------------------------------------------------------- crossings


def _pair_crossings(grid: np.ndarray, vi: np.ndarray, vj: np.ndarray) -> list[tuple[float, int]]:
    """(log cost, sign of i - j after) wherever curve i - curve j changes sign; both curves are linear
    between grid points, so the root between two grid points is exact."""
    d = vi - vj
    finite = np.isfinite(d)
    idx = np.flatnonzero(finite & (d != 0))
    if idx.size < 2:
        return []
    p, q = idx[:-1], idx[1:]
    gaps = np.concatenate([[0], np.cumsum(~finite)])  # gaps[k] = undefined points before index k
    change = (np.sign(d[p]) != np.sign(d[q])) & (gaps[q] == gaps[p + 1])  # no gap in either curve between
    p, q = p[change], q[change]
    t = d[p] / (d[p] - d[q])
    # adjacent: the linear root; zeros between them: the curves touched first at p + 1
    x = np.where(q == p + 1, grid[p] + t * (grid[q] - grid[p]), grid[np.minimum(p + 1, grid.size - 1)])
    return [(float(xk), int(np.sign(d[qk]))) for xk, qk in zip(x, q, strict=True)]


def _lowest(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the lowest curve, its value) per column of values[k, g]; -1 and NaN where none is defined."""
    defined = np.isfinite(values).any(axis=0)
    filled = np.where(np.isnan(values), np.inf, values)
    index = np.where(defined, np.argmin(filled, axis=0), -1)
    return index, np.where(defined, np.min(filled, axis=0), np.nan)


def _larger(before: Curve, after: Curve) -> bool | None:
    if before.N is None or after.N is None:
        return None
    return bool(after.N > before.N)


def crossings(a: Curve, b: Curve, *, axis: str = "flops", smooth: int = 1, hold: bool = True
              ) -> tuple[Crossover, ...]:
    """Every cost at which curves `a` and `b` swap order, over the costs where both are defined."""
    return pareto_frontier([a, b], axis=axis, smooth=smooth, hold=hold).pairwise


def pareto_frontier(curves: Sequence[Curve], *, axis: str = "flops", smooth: int = 1, hold: bool = True
                    ) -> Frontier:
    """The loss-vs-cost frontier of `curves` on the cost axis `axis` (a key of Curve.cost, or "flops").

    Returns the envelope at every knot and crossing, the leader on each interval, the leader changes, and
    all pairwise crossings. See the module docstring for the interpolation, running-minimum and `hold` choices.
    """
    knots = _prepare(curves, axis, smooth)
    names = tuple(c.name for c in curves)
    grid = np.unique(np.concatenate([x for x, _ in knots]))
    values = curve_values(knots, grid, hold=hold)

    pairwise: list[Crossover] = []
    cross_x: list[float] = []
    for i in range(len(curves)):
        for j in range(i + 1, len(curves)):
            for x, sign_after in _pair_crossings(grid, values[i], values[j]):
                before, after = (j, i) if sign_after < 0 else (i, j)  # i - j < 0 after it: i leads
                loss = float(np.interp(x, knots[i][0], knots[i][1]))
                pairwise.append(Crossover(float(np.exp(x)), loss, names[before], names[after], "cross",
                                          _larger(curves[before], curves[after])))
                cross_x.append(x)
    pairwise.sort(key=lambda c: c.cost)

    breaks = np.unique(np.concatenate([grid, np.array(cross_x)]))
    _, envelope = _lowest(curve_values(knots, breaks, hold=hold))
    if breaks.size == 1:  # every curve is one point at one cost: the lowest leads there
        leader, _ = _lowest(curve_values(knots, breaks, hold=hold))
        segments = (Segment(names[leader[0]], float(np.exp(breaks[0])), float(np.exp(breaks[0]))),)
        return Frontier(axis, names, np.exp(breaks), envelope, leader, segments, (), tuple(pairwise))
    # no crossing lies strictly between two breakpoints, so the leader at the midpoint leads on the interval
    leader, _ = _lowest(curve_values(knots, (breaks[:-1] + breaks[1:]) / 2, hold=hold))

    segments: list[Segment] = []
    changes: list[Crossover] = []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(leader)) + 1])
    ends = np.concatenate([starts[1:], [leader.size]])  # segment s covers intervals starts[s] .. ends[s] - 1
    for s, (k, end) in enumerate(zip(starts, ends, strict=True)):
        if leader[k] < 0:
            continue
        segments.append(Segment(names[leader[k]], float(np.exp(breaks[k])), float(np.exp(breaks[end]))))
        if s + 1 < len(starts) and leader[end] >= 0:
            before, after = int(leader[k]), int(leader[end])
            x = breaks[end]
            if x == knots[after][0][0]:
                kind = "entry"  # `after` did not exist below x, so it cannot have crossed `before`
            elif not hold and x == knots[before][0][-1]:
                kind = "exit"
            else:
                kind = "cross"
            changes.append(Crossover(float(np.exp(x)), float(envelope[end]), names[before], names[after], kind,
                                     _larger(curves[before], curves[after])))
    return Frontier(axis, names, np.exp(breaks), envelope, leader, tuple(segments), tuple(changes),
                    tuple(pairwise))
