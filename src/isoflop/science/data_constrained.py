"""Data-constrained planning (Muennighoff et al. 2023, arXiv 2305.16264): with only U unique tokens, repeated
epochs and excess parameters are worth less (decay constants R_D*, R_N*); the best split of C FLOPs then differs
from Chinchilla's. N, D and the law as in compute_optimal.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isoflop.science.compute_optimal import Plan, argmin_log_n, chinchilla_form, compute_optimal, positive
from isoflop.science.laws import MUENNIGHOFF, Law, MuennighoffLaw

MUENNIGHOFF_R_D_STAR, MUENNIGHOFF_R_N_STAR = MUENNIGHOFF.R_D_star, MUENNIGHOFF.R_N_star
"""Decay constants of repeated data and excess parameters (the `muennighoff` preset's), lent to a plain
Chinchilla law by `data_constrained`."""


def muennighoff_law(law: Law) -> MuennighoffLaw:
    """The law itself if data-constrained; else its Chinchilla form with Muennighoff et al.'s C4 decay
    constants R_D*, R_N* (an assumption: they were fitted on C4 with 8.7B-parameter models at most)."""
    if isinstance(law, MuennighoffLaw):
        return law
    return MuennighoffLaw(base=chinchilla_form(law), R_D_star=MUENNIGHOFF_R_D_STAR, R_N_star=MUENNIGHOFF_R_N_STAR)


@dataclass(frozen=True)
class DataConstrainedPlan:
    """The best split of C FLOPs when only U unique tokens exist, against the unconstrained Chinchilla plan."""

    flops: float
    unique_tokens: float
    N: float
    D: float
    loss: float
    effective_tokens: float
    chinchilla: Plan
    chinchilla_loss_repeated: float
    """Loss of the unconstrained plan's (N_opt, D_opt) trained on the U unique tokens repeated."""

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "unique_tokens": self.unique_tokens, "N": self.N, "D": self.D,
                "tokens_per_param": self.D / self.N, "epochs": self.D / self.unique_tokens, "loss": self.loss,
                "effective_tokens": self.effective_tokens, "effective_fraction": self.effective_tokens / self.D,
                "chinchilla": self.chinchilla.to_dict(), "chinchilla_loss_repeated": self.chinchilla_loss_repeated}


def data_constrained(law: Law, flops: float, unique_tokens: float) -> DataConstrainedPlan:
    """argmin over N of Muennighoff's L(N, D = C/(6N), U) (`muennighoff_law(law)`): a log grid over ±6 decades
    around the unconstrained N_opt, then Brent's method (the datablations README uses a grid search)."""
    C, U = positive("flops", flops), positive("unique_tokens", unique_tokens)
    m = muennighoff_law(law)
    plan = compute_optimal(m, C)

    def loss(n: float) -> float:
        return float(m.loss(n, U, D_total=C / (6.0 * n)))

    N = argmin_log_n(loss, plan.N_opt)
    D = C / (6.0 * N)
    return DataConstrainedPlan(flops=C, unique_tokens=U, N=N, D=D, loss=loss(N),
                               effective_tokens=float(m.effective_data(min(U, D), D)), chinchilla=plan,
                               chinchilla_loss_repeated=float(m.loss(plan.N_opt, U, D_total=plan.D_opt)))
