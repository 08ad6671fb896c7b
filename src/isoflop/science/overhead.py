"""Smaller and longer (de Vries 2023, "Go smol or go home"): a model k_N·N_opt reaches the compute-optimal loss
with k_D·D_opt tokens, at k_N·k_D − 1 extra training compute and k_N times the inference cost per token."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from isoflop.science.compute_optimal import chinchilla_form, compute_optimal, positive
from isoflop.science.laws import Law

DEFAULT_K_N = (1.5, 1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2)
"""Model-size factors of `isoflop plan --overhead` by default: larger, optimal, then ever smaller."""


def data_factor(alpha: float, beta: float, k_n: float) -> float:
    """k_D = (1 − (β/α)(k_N^−α − 1))^(−1/β): a model k_N·N_opt reaches L(N_opt, D_opt) with k_D·D_opt tokens
    (exact for the Chinchilla form at any budget, since αA/N_opt^α = βB/D_opt^β); inf below `min_size_factor`."""
    inner = 1.0 - (beta / alpha) * (k_n**-alpha - 1.0)
    return inner ** (-1.0 / beta) if inner > 0 else math.inf


def min_size_factor(alpha: float, beta: float) -> float:
    """k_N* = (1 + α/β)^(−1/α): no amount of data brings a smaller model to the compute-optimal loss."""
    return (1.0 + alpha / beta) ** (-1.0 / alpha)


@dataclass(frozen=True)
class OverheadRow:
    k_N: float
    k_D: float
    N: float
    D: float
    flops: float
    overhead: float
    """Extra training compute k_N·k_D − 1 (0.208 = 20.8 %); inf where the loss cannot be reached."""

    def to_dict(self) -> dict[str, float | None]:
        return {k: (v if math.isfinite(v) else None) for k, v in asdict(self).items()}


def overhead_table(law: Law, flops: float, k_values: Iterable[float] = DEFAULT_K_N) -> dict[str, Any]:
    """For N = k_N·N_opt: the tokens D = k_D·D_opt that reach the compute-optimal loss and the extra compute.
    Inference cost per token scales with k_N, so a row trades training compute for cheaper serving."""
    form = chinchilla_form(law)
    alpha, beta = form.alpha, form.beta
    plan = compute_optimal(law, flops)
    rows = []
    for k in k_values:
        k = positive("k_N", k)
        k_d = data_factor(alpha, beta, k)
        N, D = k * plan.N_opt, k_d * plan.D_opt
        rows.append(OverheadRow(k_N=k, k_D=k_d, N=N, D=D, flops=6.0 * N * D, overhead=k * k_d - 1.0))
    return {"loss": plan.loss, "k_N_min": min_size_factor(alpha, beta), "rows": rows}
