"""Chinchilla Approach 3: fit L(N, D) = E + A/N^α + B/D^β to training runs (bootstrap intervals: bootstrap.py).

The procedure is Hoffmann et al. 2022 (arXiv 2203.15556, App. D.2) as corrected by Besiroglu et al. 2024
(Epoch AI, arXiv 2404.10102; reference §2.2): in log space, with θ = [a, b, e, α, β] and A, B, E = exp(a, b, e),

    minimise  Σ_i Huber_δ( LSE(a − α·log N_i, b − β·log D_i, e) − log L_i ),   δ = 1e-3, summed (not averaged),

by L-BFGS from Hoffmann's 4,500-start grid, keeping the best. All starts advance together in the batched L-BFGS
of `optimize.py`; the best few are then polished to rounding level by Newton's method with the exact Hessian.
Every stopping rule is scale-free, so summing or averaging the loss, or multiplying it by any constant, gives
the same optimum: the premature stop Epoch diagnosed in Hoffmann's fit cannot happen, and `success` is decided
by a scale-free test (the remaining Newton step in parameter units, with a positive-definite Hessian).

Alternative losses: `lad` (least absolute deviations in log space, what Epoch's Huber-likelihood MLE amounts
to; reference §2.2) and `asymmetric` (kyo-takano/chinchilla's lower-envelope loss: mean absolute error in linear
loss space with over-prediction weighted ×10; reference §3). Both are non-smooth; they are minimised through
Huber smoothings whose width shrinks tenfold per stage (a continuation), and the reported objective is exact.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from isoflop.science import optimize
from isoflop.science.laws import ChinchillaLaw

LOSSES = ("huber", "lad", "asymmetric")
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


# ----------------------------------------------------------------------------- objective

@dataclass(frozen=True, eq=False)
class Objective:
    """The fitting objective on θ rows [a, b, e, α, β], batched: `value_grad(theta (m, 5), rows)` → (f, g).

    `counts` (S, n), when given, weights each point per problem row (bootstrap resamples as multiplicities).
    """

    log_N: np.ndarray
    log_D: np.ndarray
    L: np.ndarray
    loss: str = "huber"
    delta: float = 1e-3
    """Huber threshold (huber) or smoothing width (lad, asymmetric), in residual units."""
    weight: float = 10.0
    """Over-prediction weight of the asymmetric loss (kyo-takano/chinchilla's w = 10)."""
    reduction: str = "sum"
    scale: float = 1.0
    counts: np.ndarray | None = None
    log_L: np.ndarray = dataclasses.field(init=False, repr=False)
    _x2: np.ndarray = dataclasses.field(init=False, repr=False)
    _y2: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        # [1, −log N] and [1, −log D] columns: one BLAS call gives both Σ and −Σ·x of a gradient
        object.__setattr__(self, "log_L", np.log(self.L))
        object.__setattr__(self, "_x2", np.stack([np.ones_like(self.log_N), -self.log_N], axis=1))
        object.__setattr__(self, "_y2", np.stack([np.ones_like(self.log_D), -self.log_D], axis=1))

    def astype(self, dtype: type) -> Objective:
        """The same objective evaluated in `dtype` (float32 for the multi-start stage: about 3× faster)."""
        return dataclasses.replace(self, log_N=self.log_N.astype(dtype), log_D=self.log_D.astype(dtype),
                                   L=self.L.astype(dtype))

    @property
    def linear(self) -> bool:
        """Residuals in linear loss space (asymmetric) rather than log space (huber, lad)."""
        return self.loss == "asymmetric"

    def with_delta(self, delta: float) -> Objective:
        return dataclasses.replace(self, delta=delta)

    # The hot path works on blocks of rows small enough to stay in cache (about 2**15 point-evaluations):
    # numpy then spends its time on arithmetic rather than on allocating and faulting in fresh pages.
    def _blocks(self, m: int) -> list[slice]:
        step = max(1, 2**15 // len(self.L))
        return [slice(i, i + step) for i in range(0, m, step)]

    def _factor(self, rows: np.ndarray | None) -> np.ndarray | float:
        """Per-point multiplier: scale, 1/n for a mean, and the problem rows' resampling counts if any."""
        norm = self.scale / (len(self.L) if self.reduction == "mean" else 1.0)
        return norm if self.counts is None else self.counts[rows] * norm

    def _terms(self, theta: np.ndarray):
        """exp(a − αx), exp(b − βy) (m, n), exp(e) (m, 1) and their sum L̂ (m, n).

        Exponents are clipped where exp would over- or underflow (±700 in float64, ±80 in float32): no fit
        lives there, and inside that range this is exactly L̂ = E + A/N^α + B/D^β. Clipping also keeps
        numpy off its slow underflow path for wild trial steps.
        """
        lim = 80.0 if self.L.dtype == np.float32 else 700.0
        theta = theta.astype(self.L.dtype, copy=False)
        a, b, e, al, be = (theta[:, j:j + 1] for j in range(5))
        e1 = al * self.log_N
        np.subtract(a, e1, out=e1)
        e2 = be * self.log_D
        np.subtract(b, e2, out=e2)
        for t in (e1, e2):
            np.maximum(t, -lim, out=t)
            np.minimum(t, lim, out=t)
            np.exp(t, out=t)
        e3 = np.exp(np.minimum(np.maximum(e, -lim), lim))
        P = e1 + e2
        P += e3
        return e1, e2, e3, P

    def _rho_psi(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-point loss ρ(r) and ψ = ρ'(r); r is overwritten."""
        d = self.delta
        psi = np.minimum(np.maximum(r, -d), d)
        r -= 0.5 * psi
        r *= psi  # Huber: ψ·(r − ψ/2) is r²/2 inside ±δ and δ(|r| − δ/2) outside
        if self.loss != "huber":  # Huber/δ → |r| as δ → 0
            r /= d
            psi /= d
        if self.loss == "asymmetric":  # over-prediction (ψ > 0) costs `weight` times more
            w = np.where(psi > 0, self.weight, 1.0)
            r *= w
            psi *= w
        return r, psi

    def value_grad(self, theta: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        m = theta.shape[0]
        f, g = np.empty(m), np.empty((m, 5))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for sl in self._blocks(m):
                e1, e2, e3, P = self._terms(theta[sl])
                if self.linear:
                    rho, q = self._rho_psi(P - self.L)  # ∇L̂ = [e1, e2, e3, −e1·x, −e2·y]
                else:
                    P_log = np.log(P)
                    rho, q = self._rho_psi(np.subtract(P_log, self.log_L, out=P_log))
                    q /= P  # ∇LSE = ∇L̂ / L̂
                c = self._factor(None if rows is None else rows[sl])
                if np.ndim(c):
                    rho *= c
                    q *= c
                e1 *= q
                e2 *= q
                gs = g[sl]
                gs[:, [0, 3]] = e1 @ self._x2
                gs[:, [1, 4]] = e2 @ self._y2
                gs[:, 2] = q.sum(axis=1) * e3[:, 0]
                f[sl] = rho.sum(axis=1)
                if not np.ndim(c):
                    f[sl] *= c
                    gs *= c
        return f, g

    def hessian(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Exact Hessian (m, 5, 5): Σ c·[ρ''·∇r∇rᵀ + ρ'·∇²r].

        With K_i = ∇L̂_i = Σ_k E_ik m_k (m_1 = e_a − x e_α, m_2 = e_b − y e_β, m_3 = e_e) and
        M_i = Σ_k E_ik m_k m_kᵀ = ∇²L̂_i: linear residuals have ∇r = K, ∇²r = M; log residuals have
        ∇r = K/L̂ and ∇²r = M/L̂ − KKᵀ/L̂².
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        m = theta.shape[0]
        H = np.zeros((m, 5, 5))
        x, y = self.log_N, self.log_D
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for sl in self._blocks(m):
                e1, e2, e3, P = self._terms(theta[sl])
                e3 = np.broadcast_to(e3, e1.shape)
                r = P - self.L if self.linear else np.log(P) - self.log_L
                dpsi = (np.abs(r) <= self.delta) * (1.0 if self.loss == "huber" else 1.0 / self.delta)
                if self.loss == "asymmetric":
                    dpsi *= np.where(r > 0, self.weight, 1.0)
                _, psi = self._rho_psi(r)
                c = self._factor(None if rows is None else rows[sl])
                K = np.stack([e1, e2, e3, -e1 * x, -e2 * y], axis=-1)
                if self.linear:
                    u, v = c * psi, c * dpsi
                else:
                    u = c * psi / P
                    v = c * dpsi / (P * P) - u / P
                H[sl] = np.swapaxes(K * v[..., None], 1, 2) @ K
                u1, u2 = u * e1, u * e2
                for (i, j), val in {(0, 0): u1.sum(axis=1), (1, 1): u2.sum(axis=1), (2, 2): (u * e3).sum(axis=1),
                                    (3, 3): u1 @ (x * x), (4, 4): u2 @ (y * y), (0, 3): -(u1 @ x),
                                    (1, 4): -(u2 @ y)}.items():
                    H[sl, i, j] += val
                    if i != j:
                        H[sl, j, i] += val
        return H

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        """Log-space (log L̂ − log L) or, for `asymmetric`, linear-space (L̂ − L) residuals, (m, n)."""
        *_, P = self._terms(np.atleast_2d(np.asarray(theta, dtype=float)))
        return P - self.L if self.linear else np.log(P) - self.log_L

    def exact(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The objective without smoothing (equal to value_grad's f for `huber`)."""
        if self.loss == "huber":
            return self.value_grad(theta, rows)[0]
        r = self.residuals(theta)
        per = np.where(r > 0, self.weight * r, -r) if self.loss == "asymmetric" else np.abs(r)
        return np.sum(per * self._factor(np.arange(len(r)) if rows is None else rows), axis=1)


def prepare(N: Any, D: Any, L: Any, drop_highest: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated 1-D float arrays, with the `drop_highest` highest-loss runs removed as Epoch does: keep the
    runs whose loss is strictly below the drop_highest-th largest (reference §2.2; ties at the cut all go)."""
    arrays = [np.asarray(v, dtype=float).ravel() for v in (N, D, L)]
    for name, arr in zip("NDL", arrays, strict=True):
        if len(arr) != len(arrays[0]):
            raise ValueError(f"{name}: {len(arr)} values but N has {len(arrays[0])}")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name}: every value must be finite and > 0")
    N, D, L = arrays
    if isinstance(drop_highest, bool) or int(drop_highest) != drop_highest or drop_highest < 0:
        raise ValueError(f"drop_highest: must be a non-negative integer, got {drop_highest!r}")
    if drop_highest:
        keep = L < np.sort(L)[-int(drop_highest)] if drop_highest <= len(L) else np.zeros(len(L), bool)
        N, D, L = N[keep], D[keep], L[keep]
    if len(L) < 5:
        raise ValueError(f"need at least 5 runs to fit 5 parameters, have {len(L)}")
    return N, D, L


# ----------------------------------------------------------------------------- the fit

@dataclass(frozen=True)
class ChinchillaFit:
    """An Approach-3 fit: the law, its allocation exponents, and how the optimiser ended."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    a: float
    """N_opt ∝ C^a, a = β/(α+β)."""
    b: float
    """D_opt ∝ C^b, b = α/(α+β)."""
    G: float
    theta: tuple[float, float, float, float, float]
    """Log-space [a, b, e, α, β] = [log A, log B, log E, α, β] (Hoffmann App. D.2)."""
    objective: float
    success: bool
    message: str
    iterations: int
    n_points: int
    condition: float
    """Condition number of the objective's Hessian in θ at the optimum (large: weakly identified)."""
    newton_step: float
    """‖H⁻¹g‖∞ at the end, in parameter units: the scale-free distance left to the optimum."""
    loss: str
    delta: float
    n_starts: int
    n_near_best: int
    """Starts that ended the multi-start stage within 1e-2·(1 + |θ|∞) of the optimum (∞-norm in θ)."""
    law: ChinchillaLaw

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("law", "theta")}
        out.update(log_A=self.theta[0], log_B=self.theta[1], log_E=self.theta[2])
        return out


def fit_chinchilla(N: Any, D: Any, L: Any, *, loss: str = "huber", delta: float = 1e-3, drop_highest: int = 0,
                   starts: ChinchillaLaw | Sequence[ChinchillaLaw] | np.ndarray | None = None,
                   reduction: str | None = None, scale: float = 1.0, weight: float = 10.0,
                   max_iter: int = 1000, top_k: int = 8, fast: bool = True) -> ChinchillaFit:
    """Fit L = E + A/N^α + B/D^β to runs (N parameters, D tokens, final loss L) by Approach 3.

    `starts`: None for Hoffmann's 4,500-start grid, a law or laws, or θ rows [a, b, e, α, β].
    `reduction`: "sum" (default for huber and lad, as Hoffmann and Epoch) or "mean" (default for asymmetric);
    it and `scale` change the reported objective, not the optimum. `top_k` starts are polished. With `fast`
    the multi-start stage evaluates in float32 (about 3× faster; it only has to find the basins) and stops at
    a relative decrease of 1e-6 (scipy's L-BFGS-B defaults stop at about 2e-6 relative on Epoch's data, where
    f ≈ 1e-3); the polish is always float64 and runs to rounding level.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown {loss!r}; choose from {', '.join(LOSSES)}")
    N, D, L = prepare(N, D, L, drop_highest)
    obj = make_objective(N, D, L, loss, delta, reduction, scale, weight)
    x0 = _starts(starts)
    # stage 1: every start, moderate tolerances (the basin is what matters here)
    if fast:
        grid = optimize.lbfgs(obj.astype(np.float32).value_grad, x0, max_iter=max_iter, xtol=1e-9, ftol=1e-6,
                              min_step=1e-6)
    else:
        grid = optimize.lbfgs(obj.value_grad, x0, max_iter=max_iter, xtol=1e-9, ftol=1e-10)
    f1 = np.where(np.isfinite(grid.f), grid.f, np.inf)
    top = np.argsort(f1, kind="stable")[:top_k]
    if not np.isfinite(f1[top[0]]):
        raise ValueError("the objective is not finite at any start; check the data")
    top = top[np.isfinite(f1[top])]
    # stage 2: polish the best few to rounding level, shrinking the smoothing for non-smooth losses
    res, newton_len, stage_obj, its = polish(obj, grid.x[top], max_iter)
    f_exact = obj.exact(res.x)
    best = int(np.argmin(np.where(np.isfinite(f_exact), f_exact, np.inf)))
    theta = res.x[best]
    H = stage_obj.hessian(theta[None])[0]
    lam = np.linalg.eigvalsh(0.5 * (H + H.T))
    condition = float(lam[-1] / lam[0]) if lam[0] > 0 else math.inf
    step = float(newton_len[best])
    limit = SUCCESS_STEP * (1.0 + float(np.max(np.abs(theta))))
    success = bool(np.isfinite(f_exact[best]) and converged(res.x, newton_len)[best])
    if success:
        message = f"converged: Newton step {step:.1e} <= {limit:.1e} (scale-free), Hessian positive definite"
    elif not np.isfinite(step):
        message = "not converged: the Hessian is not positive definite at the end point"
    else:
        message = f"not converged: Newton step {step:.1e} > {limit:.1e} after {max_iter} iterations per stage"
    fbest = float(f_exact[best])
    dist = np.max(np.abs(grid.x - theta), axis=1)
    n_near_best = int(np.sum(dist <= 1e-2 * (1.0 + np.max(np.abs(theta)))))
    law = ChinchillaLaw.from_log(*theta)
    return ChinchillaFit(
        E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta, a=law.a, b=law.b, G=law.G,
        theta=tuple(float(v) for v in theta), objective=fbest, success=success, message=message,
        iterations=int(grid.iterations[top[best]] + its[best]), n_points=len(L), condition=condition,
        newton_step=step, loss=loss, delta=delta, n_starts=len(x0), n_near_best=n_near_best, law=law)


def make_objective(N, D, L, loss, delta, reduction, scale, weight, counts=None) -> Objective:
    if reduction is None:
        reduction = "mean" if loss == "asymmetric" else "sum"
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: must be 'sum' or 'mean', got {reduction!r}")
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"delta: must be finite and > 0, got {delta!r}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale: must be finite and > 0, got {scale!r}")
    return Objective(np.log(N), np.log(D), L, loss=loss, delta=delta, weight=weight, reduction=reduction,
                     scale=scale, counts=counts)


def _starts(starts) -> np.ndarray:
    if starts is None:
        return hoffmann_grid()
    if isinstance(starts, ChinchillaLaw):
        starts = [starts]
    if isinstance(starts, (list, tuple)) and starts and isinstance(starts[0], ChinchillaLaw):
        return np.array([s.theta for s in starts])
    x0 = np.atleast_2d(np.asarray(starts, dtype=float))
    if x0.ndim != 2 or x0.shape[1] != 5 or not np.all(np.isfinite(x0)):
        raise ValueError("starts: give laws or finite rows [a, b, e, alpha, beta]")
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
