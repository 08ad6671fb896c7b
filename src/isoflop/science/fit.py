"""Chinchilla's Approach 3 (Hoffmann et al. 2022, arXiv 2203.15556, §3.3): fit L(N, D) = E + A/N^α + B/D^β to
training runs, as an estimator (`Approach3`) that returns a `ScalingFit`.

The procedure is Hoffmann's App. D.2 as Besiroglu et al. 2024 (Epoch AI, arXiv 2404.10102) corrected it: the
objective of objective.py (summed Huber of log residuals, δ = 1e-3) minimised by L-BFGS from Hoffmann's 4,500
starts, keeping the best. All starts advance together in the batched L-BFGS of `optimize.py`; the best few are
then polished to rounding level by Newton's method with the exact Hessian. Every stopping rule is scale-free, so
summing or averaging the loss, or multiplying it by any constant, gives the same optimum: the premature stop Epoch
diagnosed in Hoffmann's fit cannot happen, and `success` is decided by a scale-free test (the remaining Newton
step in parameter units, with a positive-definite Hessian). The non-smooth losses (`lad`, `asymmetric`) are
minimised through Huber smoothings whose width shrinks tenfold per stage (a continuation); the reported objective
is exact.

With a `Bootstrap`, the runs are resampled with replacement (Epoch's procedure), every resample refitted in one
batch (a resample is a row of point multiplicities) by the same polish, from the full fit's optimum or from
`bootstrap_start` (Epoch started every refit from Hoffmann's TeX parameters).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from isoflop.science import optimize
from isoflop.science.bootstrap import Bootstrap, Intervals
from isoflop.science.errors import ScienceError
from isoflop.science.laws import ChinchillaLaw
from isoflop.science.objective import Objective, make_objective
from isoflop.science.result import ScalingFit

KEYS = ("E", "A", "B", "alpha", "beta", "a", "b", "G")
"""The quantities an Approach 3 bootstrap reports intervals of."""
SMOOTH_MIN = 1e-9
"""Final smoothing width of the `lad` / `asymmetric` continuation (objective error ≤ n·SMOOTH_MIN/2)."""
SUCCESS_STEP = 1e-6
"""A fit succeeds when the remaining Newton step is below SUCCESS_STEP·(1 + |θ|∞) in parameter units."""


def hoffmann_grid() -> np.ndarray:
    """Hoffmann's 4,500 starts (App. D.2), rows [a, b, e, α, β]: α, β ∈ {0, .5, …, 2}, e ∈ {−1, −.5, …, 1},
    a, b ∈ {0, 5, …, 25}."""
    ab = np.arange(0.0, 30.0, 5.0)
    e = np.arange(-1.0, 1.5, 0.5)
    ex = np.arange(0.0, 2.5, 0.5)
    return np.array(list(itertools.product(ab, ab, e, ex, ex)))


def validated_points(N: Any, D: Any, L: Any, drop_highest: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated 1-D float arrays, with the `drop_highest` highest-loss runs removed as Epoch AI do
    (`nr_of_models_excluded` in data_analysis.ipynb): keep the runs whose loss is strictly below the
    drop_highest-th largest, so ties at the cut all go."""
    arrays = [np.asarray(v, dtype=float).ravel() for v in (N, D, L)]
    for name, arr in zip("NDL", arrays, strict=True):
        if len(arr) != len(arrays[0]):
            raise ScienceError(f"{len(arr)} values but N has {len(arrays[0])}", key=name)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ScienceError("every value must be finite and > 0", key=name)
    N, D, L = arrays
    if isinstance(drop_highest, bool) or int(drop_highest) != drop_highest or drop_highest < 0:
        raise ScienceError(f"must be a non-negative integer, got {drop_highest!r}", key="drop_highest")
    if drop_highest:
        keep = L < np.sort(L)[-int(drop_highest)] if drop_highest <= len(L) else np.zeros(len(L), bool)
        N, D, L = N[keep], D[keep], L[keep]
    if len(L) < 5:
        raise ScienceError(f"need at least 5 runs to fit 5 parameters, have {len(L)}")
    return N, D, L


@dataclass(frozen=True)
class Parametric:
    """Approach 3's own detail: how the optimiser ended."""

    objective: float
    theta: tuple[float, float, float, float, float]
    """Log-space [a, b, e, α, β] = [log A, log B, log E, α, β] (Hoffmann App. D.2)."""
    iterations: int
    condition: float
    """Condition number of the objective's Hessian in θ at the optimum (large: weakly identified)."""
    newton_step: float
    """‖H⁻¹g‖∞ at the end, in parameter units: the scale-free distance left to the optimum."""
    loss: str
    delta: float
    n_starts: int
    n_near_best: int
    """Starts that ended the multi-start stage within 1e-2·(1 + |θ|∞) of the optimum (∞-norm in θ)."""

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "theta"}
        out.update(log_A=self.theta[0], log_B=self.theta[1], log_E=self.theta[2])
        return out


@dataclass(frozen=True, eq=False)
class Approach3:
    """Fit L = E + A/N^α + B/D^β to runs (N parameters, D tokens, final loss L): `Approach3(...).fit(N, D, L)`.

    `starts`: None for Hoffmann's 4,500-start grid, a law or laws, or θ rows [a, b, e, α, β].
    `reduction`: "sum" (default for huber and lad, as Hoffmann and Epoch) or "mean" (default for asymmetric);
    it and `scale` change the reported objective, not the optimum. `top_k` starts are polished. With `fast`
    the multi-start stage evaluates in float32 (about 3× faster; it only has to find the basins) and stops at
    a relative decrease of 1e-6 (scipy's L-BFGS-B defaults stop at about 2e-6 relative on Epoch's data, where
    f ≈ 1e-3); the polish is always float64 and runs to rounding level.
    """

    loss: str = "huber"
    delta: float = 1e-3
    """Huber threshold (huber) or starting smoothing width (lad, asymmetric), in residual units."""
    drop_highest: int = 0
    """Leave out the runs of the `drop_highest` highest losses first (Epoch AI drop 5 of Chinchilla's)."""
    starts: ChinchillaLaw | Sequence[ChinchillaLaw] | np.ndarray | None = None
    reduction: str | None = None
    scale: float = 1.0
    weight: float = 10.0
    """Over-prediction weight of the asymmetric loss (kyo-takano/chinchilla's w = 10)."""
    max_iter: int = 1000
    top_k: int = 8
    fast: bool = True
    bootstrap: Bootstrap | None = None
    bootstrap_start: ChinchillaLaw | None = None
    """Where every resample's refit starts: None for the full fit's optimum."""

    def __post_init__(self) -> None:
        make_objective(np.ones(1), np.ones(1), np.ones(1), self.loss, self.delta, self.reduction, self.scale,
                       self.weight)  # checks the objective's knobs now, before any data

    def objective(self, N: np.ndarray, D: np.ndarray, L: np.ndarray, counts: np.ndarray | None = None) -> Objective:
        return make_objective(N, D, L, self.loss, self.delta, self.reduction, self.scale, self.weight, counts)

    def fit(self, N: Any, D: Any, L: Any) -> ScalingFit:
        N, D, L = validated_points(N, D, L, self.drop_highest)
        detail, success, message = self._point(self.objective(N, D, L))
        law = ChinchillaLaw.from_log(*detail.theta)
        intervals = None if self.bootstrap is None else self._resample(N, D, L, detail.theta)
        if intervals is not None and intervals.n_failed:
            message += (f"; {intervals.n_failed} of {intervals.n} resamples did not converge and are left out "
                        "of the intervals")
        # N_opt = G·(C/6)^a = (G·6^−a)·C^a, and D_opt = (6^−b/G)·C^b (Hoffmann eq. 4)
        return ScalingFit(approach=3, a=law.a, b=law.b, k_N=law.G * 6.0**-law.a, k_D=6.0**-law.b / law.G,
                          success=success, message=message, n_points=len(L), detail=detail, law=law,
                          intervals=intervals)

    def _point(self, obj: Objective) -> tuple[Parametric, bool, str]:
        x0 = _starts(self.starts)
        # stage 1: every start, moderate tolerances (the basin is what matters here)
        if self.fast:
            grid = optimize.lbfgs(obj.astype(np.float32).value_grad, x0, max_iter=self.max_iter, xtol=1e-9,
                                  ftol=1e-6, min_step=1e-6)
        else:
            grid = optimize.lbfgs(obj.value_grad, x0, max_iter=self.max_iter, xtol=1e-9, ftol=1e-10)
        f1 = np.where(np.isfinite(grid.f), grid.f, np.inf)
        top = np.argsort(f1, kind="stable")[:self.top_k]
        if not np.isfinite(f1[top[0]]):
            raise ScienceError("the objective is not finite at any start; check the data")
        top = top[np.isfinite(f1[top])]
        # stage 2: polish the best few to rounding level, shrinking the smoothing for non-smooth losses
        res, newton_len, stage_obj, its = polish(obj, grid.x[top], self.max_iter)
        f_exact = obj.exact(res.x)
        best = int(np.argmin(np.where(np.isfinite(f_exact), f_exact, np.inf)))
        theta = res.x[best]
        H = stage_obj.hessian(theta[None])[0]
        lam = np.linalg.eigvalsh(0.5 * (H + H.T))
        step = float(newton_len[best])
        success = bool(np.isfinite(f_exact[best]) and converged(res.x, newton_len)[best])
        dist = np.max(np.abs(grid.x - theta), axis=1)
        detail = Parametric(
            objective=float(f_exact[best]), theta=tuple(float(v) for v in theta),
            iterations=int(grid.iterations[top[best]] + its[best]),
            condition=float(lam[-1] / lam[0]) if lam[0] > 0 else math.inf, newton_step=step, loss=self.loss,
            delta=self.delta, n_starts=len(x0),
            n_near_best=int(np.sum(dist <= 1e-2 * (1.0 + np.max(np.abs(theta))))))
        return detail, success, _verdict(success, step, theta, self.max_iter)

    def _resample(self, N: np.ndarray, D: np.ndarray, L: np.ndarray, theta: tuple[float, ...]) -> Intervals:
        """Refit every resample in one batch; a refit that fails the convergence test is left out."""
        boot = self.bootstrap
        counts = boot.counts(len(L), boot.rng(), by_index=True)
        obj = self.objective(N, D, L, counts=counts)
        start = self.bootstrap_start.theta if self.bootstrap_start is not None else theta
        res, newton_len, _, _ = polish(obj, np.tile(np.asarray(start), (int(boot.n), 1)), self.max_iter)
        ok = converged(res.x, newton_len) & np.isfinite(res.f)
        laws = ChinchillaLaw.from_log(*res.x.T)  # broadcasts: numpy arrays in every field
        values = {k: np.where(ok, np.asarray(getattr(laws, k), dtype=float), np.nan) for k in KEYS}
        return boot.summarise(values, theta=res.x)


def _verdict(success: bool, step: float, theta: np.ndarray, max_iter: int) -> str:
    limit = SUCCESS_STEP * (1.0 + float(np.max(np.abs(theta))))
    if success:
        return f"converged: Newton step {step:.1e} <= {limit:.1e} (scale-free), Hessian positive definite"
    if not np.isfinite(step):
        return "not converged: the Hessian is not positive definite at the end point"
    return f"not converged: Newton step {step:.1e} > {limit:.1e} after {max_iter} iterations per stage"


def _starts(starts) -> np.ndarray:
    if starts is None:
        return hoffmann_grid()
    if isinstance(starts, ChinchillaLaw):
        starts = [starts]
    if isinstance(starts, (list, tuple)) and starts and isinstance(starts[0], ChinchillaLaw):
        return np.array([s.theta for s in starts])
    x0 = np.atleast_2d(np.asarray(starts, dtype=float))
    if x0.ndim != 2 or x0.shape[1] != 5 or not np.all(np.isfinite(x0)):
        raise ScienceError("give laws or finite rows [a, b, e, alpha, beta]", key="starts")
    return x0


def converged(x: np.ndarray, newton_len: np.ndarray) -> np.ndarray:
    """The scale-free verdict per row: the Newton step left is below SUCCESS_STEP·(1 + |θ|∞), H is PD."""
    return newton_len <= SUCCESS_STEP * (1.0 + np.max(np.abs(x), axis=1))


def polish(obj: Objective, x: np.ndarray, max_iter: int):
    """Tight L-BFGS then Newton on each row, once for huber, per smoothing stage for the non-smooth losses.

    Returns the Newton result, the final Newton step lengths, the last stage's objective and the iterations.
    """
    deltas = [obj.delta]
    if obj.loss != "huber":
        while deltas[-1] > SMOOTH_MIN * 1.0001:
            deltas.append(max(deltas[-1] / 10.0, SMOOTH_MIN))
    its = np.zeros(len(x), dtype=np.int64)
    for d in deltas:
        stage = obj.with_delta(d)
        lb = optimize.lbfgs(stage.value_grad, x, max_iter=max_iter, xtol=1e-13, ftol=1e-15, gtol=1e-14)
        res, newton_len = optimize.newton(stage.value_grad, stage.hessian, lb.x, max_iter=min(max_iter, 50))
        x = res.x
        its += lb.iterations + res.iterations
    return res, newton_len, stage, its
