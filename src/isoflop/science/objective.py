"""The objective of a Chinchilla Approach 3 fit, batched over many parameter vectors, with exact derivatives.

In log space, with θ = [a, b, e, α, β] and A, B, E = exp(a, b, e) (Hoffmann et al. 2022, arXiv 2203.15556, App.
D.2), the prediction is log L̂_i = LSE(a − α·log N_i, b − β·log D_i, e) and the loss of a fit is

    Σ_i Huber_δ( log L̂_i − log L_i ),   δ = 1e-3, summed over runs (Besiroglu et al. 2024, arXiv 2404.10102),

`huber`. Alternatives: `lad` (absolute log residuals, which Epoch's Huber-likelihood fit with a free scale
amounts to, its fitted scale being far below δ) and `asymmetric` (kyo-takano/chinchilla's lower-envelope loss:
absolute error in linear loss space, over-prediction weighted `weight` = 10, averaged). The two non-smooth losses
are evaluated through a Huber smoothing of width `delta`, which the fit shrinks stage by stage (fit.polish).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from isoflop.science.errors import ScienceError

LOSSES = ("huber", "lad", "asymmetric")


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


def make_objective(N: np.ndarray, D: np.ndarray, L: np.ndarray, loss: str = "huber", delta: float = 1e-3,
                   reduction: str | None = None, scale: float = 1.0, weight: float = 10.0,
                   counts: np.ndarray | None = None) -> Objective:
    """The objective on runs (N, D, L), checked; `reduction` None means "mean" for asymmetric, else "sum"."""
    if loss not in LOSSES:
        raise ScienceError(f"unknown {loss!r}; choose from {', '.join(LOSSES)}", key="loss")
    if reduction is None:
        reduction = "mean" if loss == "asymmetric" else "sum"
    if reduction not in ("sum", "mean"):
        raise ScienceError(f"must be 'sum' or 'mean', got {reduction!r}", key="reduction")
    if not (delta > 0 and math.isfinite(delta)):
        raise ScienceError(f"must be finite and > 0, got {delta!r}", key="delta")
    if not (scale > 0 and math.isfinite(scale)):
        raise ScienceError(f"must be finite and > 0, got {scale!r}", key="scale")
    return Objective(np.log(N), np.log(D), L, loss=loss, delta=delta, weight=weight, reduction=reduction,
                     scale=scale, counts=counts)
