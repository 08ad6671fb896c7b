"""Inference-aware planning (Sardana et al. 2024, arXiv 2401.00448): the model that reaches a target loss with
the fewest lifetime FLOPs, training 6·N·D plus inference 2·N·T_inf, against the Chinchilla-optimal model at the
same loss. N, D and the law as in compute_optimal.py."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from isoflop.science.compute_optimal import chinchilla_form
from isoflop.science.errors import ScienceError
from isoflop.science.laws import Law


@dataclass(frozen=True)
class InferencePlan:
    """Minimum lifetime FLOPs 6·N·D + 2·N·T_inf at loss ℓ, and the Chinchilla-style model at the same loss."""

    loss: float
    inference_tokens: float
    N: float
    D: float
    chinchilla_N: float
    chinchilla_D: float

    def lifetime_flops(self, N: float, D: float) -> float:
        return 6.0 * N * D + 2.0 * N * self.inference_tokens

    def to_dict(self) -> dict[str, float]:
        ours = self.lifetime_flops(self.N, self.D)
        theirs = self.lifetime_flops(self.chinchilla_N, self.chinchilla_D)
        return {**asdict(self), "tokens_per_param": self.D / self.N, "training_flops": 6.0 * self.N * self.D,
                "inference_flops": 2.0 * self.N * self.inference_tokens, "lifetime_flops": ours,
                "chinchilla_lifetime_flops": theirs, "N_ratio": self.N / self.chinchilla_N,
                "D_ratio": self.D / self.chinchilla_D, "flops_ratio": ours / theirs}


def inference_aware(law: Law, loss_target: float, inference_tokens: float) -> InferencePlan:
    """Sardana et al.'s Lagrange solution: D* is the root of
    (B + βB/α)·D^−β + (T_inf·βB/(3α))·D^(−β−1) + E − ℓ = 0 (decreasing in D; found by brentq in log D from the
    T_inf = 0 root, which is Chinchilla's D at loss ℓ), then N* = (A/(ℓ − E − B·D*^−β))^(1/α)."""
    from scipy.optimize import brentq

    form = chinchilla_form(law)
    E, A, B, alpha, beta = form.E, form.A, form.B, form.alpha, form.beta
    ell = float(loss_target)
    if not (math.isfinite(ell) and ell > E):
        raise ScienceError(f"target {ell} must exceed the law's irreducible loss E = {E:.6g}", key="loss")
    T = float(inference_tokens)
    if not (math.isfinite(T) and T >= 0):
        raise ScienceError(f"must be a non-negative finite number, got {T}", key="inference_tokens")
    gap = ell - E
    N0, D0 = form.optimal_at_loss(ell)  # the compute-optimal model at loss ℓ: the T_inf = 0 solution
    c1, c2 = B + beta * B / alpha, T * beta * B / (3 * alpha)

    def f(x: float) -> float:  # x = log D
        return c1 * math.exp(-beta * x) + c2 * math.exp((-beta - 1) * x) - gap

    lo = math.log(D0)
    if T == 0 or f(lo) <= 0:
        D = D0
    else:
        hi = lo + 1.0
        while f(hi) > 0:
            hi += 1.0
        D = math.exp(brentq(f, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200))
    N = (A / (gap - B * D**-beta)) ** (1 / alpha)
    return InferencePlan(loss=ell, inference_tokens=T, N=N, D=D, chinchilla_N=N0, chinchilla_D=D0)
