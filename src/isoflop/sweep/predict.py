"""`sweep predict --flops C'`: the validating rung. The fitted law's compute-optimal model at a budget C' beyond
every budget of the sweep, added to the plan as a run of role "rung", trained as a normal run of the sweep, and
its measured loss set against the prediction: |predicted − measured| / measured.

N_opt(C') comes from the approach asked for (default 3) under the total-N, counted-FLOPs convention, the one the
budgets are written in (fit.py says how each approach gives it); the rung's shape is then built by the grid
(`grid.rung_run`: the same shape family, learning-rate rule and horizon arithmetic as the sweep's runs), so its
N and D are the planned run's, close to N_opt and D_opt. The loss is always predicted by approach 3's law, at
the rung's planned N and D (what is measured) and at the optimum. The prediction is stored in fit.json's
`rungs` and kept by every later fit, which adds the measurement once the rung is complete, so `sweep report`
shows it; Marin's "scaling ladder" validates its fits the same way (marin-community/marin,
lib/marin/src/marin/scaling_laws/scaling_ladder.py).
"""

from __future__ import annotations

import math
import time
from typing import Any, TextIO

from isoflop.errors import ConfigError
from isoflop.science.bootstrap import DEFAULT_LEVEL
from isoflop.sweep.fit import DEFAULT_BOOTSTRAP, SweepFit, fit_sweep, jsonable, measure_rung
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.plan import PlannedRun, SweepPlan
from isoflop.sweep.points import collect

CONVENTION = "total"
"""The budgets are counted FLOPs of total parameters: the rung's N_opt is asked in that convention."""


def check_flops(flops: float, plan: SweepPlan) -> float:
    """C' as a float, or ConfigError naming --flops when it is not beyond every budget of the sweep."""
    if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops > 0):
        raise ConfigError("--flops", f"must be positive finite FLOPs, got {flops!r}")
    top = max(plan.budgets)
    if flops <= top:
        raise ConfigError("--flops", f"{flops:g} does not exceed the sweep's largest budget {top:g}: a rung tests "
                                     "the fit beyond the budgets it was fitted on")
    return float(flops)


def prediction(result: SweepFit, flops: float, approach: int = 3) -> dict[str, Any]:
    """N_opt(C') and D_opt(C') from `approach`, and approach 3's loss there (ConfigError when either is missing)."""
    if approach not in (1, 2, 3):
        raise ConfigError("--approach", f"must be 1, 2 or 3, got {approach}")
    N, D = result.optimum(CONVENTION, approach, flops)
    if not (math.isfinite(N) and math.isfinite(D) and N > 0 and D > 0):
        raise ConfigError(f"approach {approach}", f"the fit has no finite compute-optimal size at {flops:g} FLOPs "
                                                  "(a degenerate law: see `isoflop sweep fit`)")
    law = _law(result)
    alloc = result.allocation(CONVENTION, approach, [flops])
    return {"flops": flops, "approach": approach, "N_opt": N, "D_opt": D, "a": alloc["a"], "b": alloc["b"],
            "predicted_loss_at_optimum": float(law.loss(N, D)), "law": law.to_dict(),
            "fit_runs": len(result.found.best)}


def _law(result: SweepFit) -> Any:
    fit = result.fits.get((CONVENTION, 3))
    if fit is None:
        raise ConfigError("--approach", "the predicted loss needs approach 3's law, which could not be fitted: "
                          + result.errors.get((CONVENTION, 3), "not fitted"))
    return fit.law


def with_rung(entry: dict[str, Any], rung: PlannedRun, law: dict[str, float]) -> dict[str, Any]:
    """The prediction for the planned rung: its N and D, and the law's loss there."""
    from isoflop.science.laws import ChinchillaLaw

    N, D = float(rung.params["total"]), float(rung.tokens)
    return {"key": rung.key, **entry, "N_planned": N, "D_planned": D, "flops_planned": float(rung.flops),
            "predicted_loss": float(ChinchillaLaw(**law).loss(N, D)), "status": "planned",
            "predicted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def sweep_predict(sweep: SweepDir, *, flops: float, approach: int = 3, bootstrap: int = DEFAULT_BOOTSTRAP,
                  level: float = DEFAULT_LEVEL, seed: int = 0, dry_run: bool = False, train: bool = True,
                  stream: TextIO | None = None) -> dict[str, Any]:
    """Predict the rung at `flops`, add it to the plan, train it (unless `train` is False: `sweep run` will;
    the trainer's progress goes to `stream`) and measure it. With `dry_run` nothing is written or trained.
    Returns {"rung": the planned run, "prediction": ..., "dry_run": ...}."""
    plan = sweep.read_plan()
    flops = check_flops(flops, plan)
    result = fit_sweep(sweep, bootstrap=bootstrap, level=level, seed=seed)
    entry = prediction(result, flops, approach)
    rung = build_rung(sweep, entry["N_opt"], flops)
    entry = with_rung(entry, rung, entry["law"])
    if dry_run:
        return {"rung": rung.to_dict(), "prediction": entry, "dry_run": True}
    with sweep_lock(sweep):
        plan = sweep.read_plan()  # again, under the lock
        sweep.write_plan(plan.with_runs([rung]))
        result.rungs = _upsert(result.rungs, entry)
        sweep.write_fit(jsonable(result.to_dict()))
        if train:
            train_rung(sweep, rung.key, stream)
            entry = measure(sweep, entry)
            result.rungs = _upsert(result.rungs, entry)
            sweep.write_fit(jsonable(result.to_dict()))
    return {"rung": rung.to_dict(), "prediction": entry, "dry_run": False}


def measure(sweep: SweepDir, entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with its rung's measured loss, read as the fit reads runs (complete, the plan's config)."""
    found = collect(sweep)
    point = next((p for p in found.rungs if p.key == entry["key"]), None)
    excluded = next((e for e in found.excluded if e.key == entry["key"]), None)
    return measure_rung(entry, point, excluded)


def _upsert(rungs: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in rungs if r.get("key") != entry["key"]] + [entry]


# ---------------------------------------------------------------------------------------------- the seams


def build_rung(sweep: SweepDir, n_params: float, budget: float) -> PlannedRun:
    """The grid's run of `n_params` parameters at `budget` (grid.rung_run on the sweep's own spec)."""
    from isoflop.sweep import grid
    from isoflop.sweep import spec as spec_module

    spec = spec_module.load_spec(sweep.spec_file)
    # the plan holds the base config, so a base file next to the original spec is not needed (plans written
    # before the plan held it fall back to reading the base next to the sweep's copy of the spec)
    base = sweep.read_plan().base or None
    return grid.rung_run(spec, sweep.path, n_params, budget, base=base)


def train_rung(sweep: SweepDir, key: str, stream: TextIO | None = None) -> Any:
    """Train the rung as any run of the sweep is trained (run_one.run_planned); its RunRecord."""
    from isoflop.sweep import run_one  # torch is imported only when a rung trains

    return run_one.run_planned(sweep, key, stream=stream)


def sweep_lock(sweep: SweepDir) -> Any:
    """The sweep lock: no `sweep run` may edit the plan or train meanwhile."""
    from isoflop.sweep.lock import SweepLock

    return SweepLock(sweep.lock_file)
