"""Approach-3 fit speed: isoflop's batched 4,500-start fit against a plain per-start scipy L-BFGS-B loop.

Both minimise the same objective with the same analytic gradient (`isoflop.science.objective.Objective`, float64
for scipy) on Epoch AI's transcription of Chinchilla's runs (shipped: `isoflop.science.examples.CHINCHILLA`;
D = C/(6N), the 5 highest-loss runs dropped as Epoch AI do, sum-Huber δ = 1e-3) from Hoffmann's 4,500 starts. The scipy loop uses scipy's default tolerances, as
Hoffmann's and Epoch's fits did. Prints one JSON line: both times, both best objectives, the speed-up (target
>= 10) and the relative difference of the objectives (target <= 1e-9).

    python benchmarks/fit_speed.py [--data FILE.csv] [--rounds 3]

`--data` fits another table with the same columns instead of the shipped one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.optimize import minimize

from isoflop.science.examples import CHINCHILLA
from isoflop.science.fit import Approach3, hoffmann_grid, prepare
from isoflop.science.objective import Objective
from isoflop.science.records import load_records


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    records = load_records([path], columns=CHINCHILLA.columns)  # D = C / (6N)
    return records.N, records.D, records.L


def scipy_loop(obj: Objective, starts: np.ndarray) -> tuple[float, np.ndarray, int]:
    """The plain way: one scipy.optimize.minimize(L-BFGS-B) per start, default tolerances, keep the best."""
    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = obj.value_grad(theta[None])
        return float(f[0]), g[0]

    best_f, best_x, n_eval = np.inf, starts[0], 0
    with np.errstate(all="ignore"):
        for x0 in starts:
            res = minimize(fun, x0, jac=True, method="L-BFGS-B")
            n_eval += res.nfev
            if np.isfinite(res.fun) and res.fun < best_f:
                best_f, best_x = float(res.fun), res.x
    return best_f, best_x, n_eval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of the isoflop fit (median reported)")
    args = ap.parse_args()
    path = args.data or CHINCHILLA.path()
    if not path.is_file():
        sys.exit(f"{path}: no such data file")
    N, D, L = prepare(*load(path), drop_highest=CHINCHILLA.drop_highest)
    starts = hoffmann_grid()

    times, fit = [], None
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        fit = Approach3().fit(N, D, L)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    fit64 = Approach3(fast=False).fit(N, D, L)
    t_fit64 = time.perf_counter() - t0

    obj = Objective(np.log(N), np.log(D), L)
    t0 = time.perf_counter()
    sp_f, sp_x, sp_evals = scipy_loop(obj, starts)
    t_scipy = time.perf_counter() - t0

    t_fit = statistics.median(times)
    print(json.dumps({
        "benchmark": "fit_speed", "n_points": len(L), "n_starts": len(starts), "cpus": os.cpu_count(),
        "numpy": np.__version__, "scipy": scipy.__version__,
        "isoflop_s": round(t_fit, 3), "isoflop_objective": fit.detail.objective, "isoflop_success": fit.success,
        "isoflop_float64_s": round(t_fit64, 3), "isoflop_float64_objective": fit64.detail.objective,
        "scipy_loop_s": round(t_scipy, 3), "scipy_objective": sp_f, "scipy_evaluations": sp_evals,
        "speedup": round(t_scipy / t_fit, 2), "speedup_float64": round(t_scipy / t_fit64, 2),
        "objective_rel_diff": (sp_f - fit.detail.objective) / fit.detail.objective,
        "max_param_rel_diff": float(np.max(np.abs(np.asarray(fit.detail.theta) - sp_x) / np.abs(sp_x))),
    }))


if __name__ == "__main__":
    main()
