"""The compute-optimal plan of a training budget from a scaling law: how to spend C training FLOPs.

Throughout, N is the **total** parameter count (Hoffmann et al. 2022's N, embeddings included), D the training
tokens, and C = 6·N·D. A law of Chinchilla form E + A/N^α + B/D^β is planned by its closed form
(`ChinchillaLaw.optimal`, Hoffmann eq. 4); any other law (Kaplan's joint law) by a search along C = 6·N·D.

    compute_optimal      N_opt, D_opt and the predicted loss at one budget
    optimal_tokens       the budget for which a model of N parameters is compute-optimal
    flops_from_gpu_hours C = H · 3600 · P · MFU
    describe_law         the law's parameters and allocation exponents, for a plan's output

Beyond the compute-optimal point, each in its own module: uncertainty.py (intervals from a bootstrapped fit),
inference_plan.py (Sardana et al. 2024: training plus inference FLOPs), data_constrained.py (Muennighoff et al.
2023: repeated data), overhead.py (de Vries 2023: a smaller model trained longer), plan_text.py (the text table).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from isoflop.science.errors import ScienceError
from isoflop.science.laws import ChinchillaLaw, Law


def chinchilla_form(law: Law) -> ChinchillaLaw:
    """The law's Chinchilla form (`law.chinchilla`); ScienceError for a law without one (Kaplan's)."""
    form = law.chinchilla
    if form is None:
        raise ScienceError(f"{type(law).__name__} is not of Chinchilla form E + A/N^alpha + B/D^beta")
    return form


def positive(key: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ScienceError(f"must be a positive finite number, got {value}", key=key)
    return value


@dataclass(frozen=True)
class Plan:
    """The compute-optimal allocation of one budget."""

    flops: float
    N_opt: float
    D_opt: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.D_opt / self.N_opt

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "tokens_per_param": self.tokens_per_param}


def flops_from_gpu_hours(gpu_hours: float, mfu: float, peak_flops: float) -> float:
    """Training FLOPs bought by H GPU-hours at peak P FLOP/s per GPU and model-FLOPs utilisation MFU."""
    positive("gpu_hours", gpu_hours)
    positive("peak_flops", peak_flops)
    if not (math.isfinite(mfu) and 0 < mfu <= 1):
        raise ScienceError(f"must be in (0, 1], got {mfu}", key="mfu")
    return gpu_hours * 3600.0 * peak_flops * mfu


def compute_optimal(law: Law, flops: float) -> Plan:
    """N_opt, D_opt = C/(6·N_opt) (so that 6·N_opt·D_opt = C to rounding) and the loss there."""
    C = positive("flops", flops)
    form = law.chinchilla
    if form is None:
        N = _numeric_optimal_n(law, C)
        D = C / (6.0 * N)
        return Plan(flops=C, N_opt=N, D_opt=D, loss=float(law.loss(N, D)))
    N, D = form.optimal(C)
    return Plan(flops=C, N_opt=N, D_opt=D, loss=form.loss(N, D))


def optimal_tokens(law: Law, n_params: float) -> Plan:
    """The budget for which a model of `n_params` is compute-optimal (`ChinchillaLaw.optimal_tokens`)."""
    N = positive("n_params", n_params)
    form = chinchilla_form(law)
    D = form.optimal_tokens(N)
    return Plan(flops=6.0 * N * D, N_opt=N, D_opt=D, loss=form.loss(N, D))


def argmin_log_n(loss: Any, center: float, decades: float = 6.0) -> float:
    """argmin of loss(N) over log N: a log grid ±`decades` around `center`, then Brent between the best grid
    point's neighbours (robust to the kinks of the data-constrained law)."""
    from scipy.optimize import minimize_scalar

    grid = math.log(center) + np.linspace(-decades, decades, 1201) * math.log(10)
    values = np.array([loss(math.exp(x)) for x in grid])
    i = int(np.nanargmin(values))
    if i in (0, len(grid) - 1):
        raise ScienceError(f"no minimum within {decades:g} decades of N = {center:.3g}")
    res = minimize_scalar(lambda x: loss(math.exp(x)), bounds=(grid[i - 1], grid[i + 1]), method="bounded",
                          options={"xatol": 1e-11})
    return float(math.exp(res.x))


def _numeric_optimal_n(law: Law, C: float) -> float:
    """N minimising law.loss(N, C/(6N)) for a law with no closed form (Kaplan's joint law)."""
    return argmin_log_n(lambda n: float(law.loss(n, C / (6.0 * n))), center=math.sqrt(C / 120.0))


def describe_law(law: Law, name: str) -> dict[str, Any]:
    """The law's name and parameters; for a Chinchilla form also its exponents a, b and G (Hoffmann eq. 4); and
    what its N counts."""
    out: dict[str, Any] = {"name": name, **law.to_dict()}
    form = law.chinchilla
    if form is None:
        out["N"] = "non-embedding parameters (Kaplan)"
        return out
    out.update(a=form.a, b=form.b, G=form.G, N="total parameters")
    return out
