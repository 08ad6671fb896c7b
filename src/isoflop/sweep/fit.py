"""`sweep fit`: Chinchilla's approaches 1, 2 and 3 (isoflop.science) on a sweep's own runs, under three parameter
conventions side by side, with bootstrap intervals; the result is one JSON-ready dict, also written to fit.json.

Points come from `points.collect` (complete runs joined with their planned cells; failed, incomplete and
corrupt runs excluded and listed; with a learning-rate grid the best learning rate per cell). Approach 1 reads
the same runs' training curves (the loss at FLOP levels along each run, `science.isoflop.Approach1`), approach 2
fits a parabola per planned budget (`Approach2`), approach 3 the law L = E + A/N^α + B/D^β (`Approach3`).

Conventions (the exponent moves with what N and C count: Kaplan et al. 2020, arXiv 2001.08361, count
non-embedding parameters; Hoffmann et al. 2022, arXiv 2203.15556, all of them with C = 6·N·D; Porian et al. 2024,
arXiv 2406.19146, and Pearce & Song 2024, arXiv 2406.12907, trace much of the gap between the two to this):

    total          N = N_total,          C = the engine's counted training FLOPs (what the budgets are)
    non_embedding  N = N_non_embedding,  C = the counted FLOPs
    6nd            N = N_total,          C = 6·N_total·D

Every convention's cost is read as C = k·N^p·D: k = 6, p = 1 for 6nd; for the counted conventions (k, p) is the
least-squares line of ln(C/D) on ln N over the fitted runs (the counted FLOPs per token are not proportional to N:
attention and the output head add terms that do not scale with the parameters). Approach 3's optimum under that
cost, minimising the law on C = k·N^p·D, is

    N_opt = [αA/(p·β·B)]^(1/(α+p·β)) · (C/k)^(β/(α+p·β)),   D_opt = C/(k·N_opt^p),

so a = β/(α + p·β) and b = 1 − p·a; with k = 6, p = 1 it is Hoffmann's eq. 4. Approach 2's minima N* come with
the same cost's D* = C/(k·N*^p) (science's approach 2 writes D* = C/(6N*)); approach 1 measures D on its envelope.

The runs of one planned budget share their counted FLOPs (within the plan's 1 %) but not their 6·N·D: for
approach 2 each budget is labelled, in each convention, by the geometric mean of its runs' C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isoflop.errors import ConfigError
from isoflop.science.bootstrap import DEFAULT_LEVEL, Bootstrap
from isoflop.science.errors import ScienceError
from isoflop.science.records import Curve, Records, load_curves
from isoflop.science.result import ScalingFit, budget_key
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.points import SweepPoint, SweepPoints, collect

FIT_VERSION = 1
APPROACHES = (1, 2, 3)
ENVELOPE_POINTS = 100
"""Levels of approach 1's envelope that fit.json keeps (the plots draw it from the fit itself)."""
DEFAULT_BOOTSTRAP = 200
"""Resamples per fit unless asked (a second or so per approach on a CPU-sized sweep)."""


@dataclass(frozen=True)
class Convention:
    name: str
    label: str
    n_key: str
    """The SweepPoint attribute that is N."""
    six_nd: bool
    """C = 6·N·D (else the counted FLOPs)."""

    def N(self, points: list[SweepPoint]) -> np.ndarray:
        return np.array([getattr(p, self.n_key) for p in points], dtype=float)

    def C(self, points: list[SweepPoint]) -> np.ndarray:
        if self.six_nd:
            return 6.0 * self.N(points) * np.array([p.D for p in points])
        return np.array([p.flops for p in points], dtype=float)


CONVENTIONS = (
    Convention("total", "total N, counted FLOPs", "N_total", False),
    Convention("non_embedding", "non-embedding N, counted FLOPs", "N_non_embedding", False),
    Convention("6nd", "total N, C = 6ND", "N_total", True),
)
"""The module docstring says what each counts and why they are shown together."""


@dataclass(frozen=True)
class CostModel:
    """C = k·N^p·D: training FLOPs of N parameters on D tokens in one convention."""

    k: float
    p: float
    fitted: bool

    @classmethod
    def of(cls, convention: Convention, points: list[SweepPoint]) -> CostModel:
        if convention.six_nd:
            return cls(6.0, 1.0, False)
        N, C, D = convention.N(points), convention.C(points), np.array([p.D for p in points])
        if np.unique(N).size < 2:
            raise ScienceError("the FLOPs per token need runs of at least 2 sizes", key=convention.name)
        p, log_k = np.polyfit(np.log(N), np.log(C / D), 1)
        return cls(float(np.exp(log_k)), float(p), True)

    def tokens(self, N: Any, C: Any) -> Any:
        return np.asarray(C, dtype=float) / (self.k * np.asarray(N, dtype=float) ** self.p)

    def law_optimum(self, law: Any, C: Any) -> tuple[Any, Any]:
        """(N_opt, D_opt) minimising `law` (a ChinchillaLaw, array fields allowed) on C = k·N^p·D."""
        al, be, p = (np.asarray(x, dtype=float) for x in (law.alpha, law.beta, self.p))
        # as arrays, a degenerate law (a negative coefficient or exponent: no interior optimum) gives NaN rather
        # than Python's complex power
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            N = (al * np.asarray(law.A, dtype=float) / (p * be * np.asarray(law.B, dtype=float))) ** (
                1.0 / (al + p * be)) * (np.asarray(C, dtype=float) / self.k) ** (be / (al + p * be))
            return N, self.tokens(N, C)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "p": self.p, "fitted": self.fitted}


@dataclass(eq=False)
class SweepFit:
    """The fit of one sweep, as objects (`to_dict` is what fit.json holds)."""

    sweep: SweepDir
    mode: str
    budgets: list[float]
    found: SweepPoints
    bootstrap: Bootstrap | None
    costs: dict[str, CostModel] = field(default_factory=dict)
    fits: dict[tuple[str, int], ScalingFit] = field(default_factory=dict)
    """(convention, approach) -> the science's ScalingFit."""
    errors: dict[tuple[str, int], str] = field(default_factory=dict)
    """(convention, approach) -> why it could not be fitted."""
    notes: dict[tuple[str, int], str] = field(default_factory=dict)
    """(convention, approach) -> a caution about a fit that was made (its intervals, mostly)."""
    curves: list[Curve] = field(default_factory=list)
    """The total convention's training curves (approach 1's input), for the report."""
    rungs: list[dict[str, Any]] = field(default_factory=list)

    def allocation(self, convention: str, approach: int, budgets: list[float]) -> dict[str, Any]:
        """a, b and N_opt, D_opt at `budgets` under `convention`, with intervals where the bootstrap gives them."""
        out: dict[str, Any] = {"convention": convention, "approach": approach}
        if (convention, approach) not in self.fits:
            return {**out, "error": self.errors.get((convention, approach), "not fitted")}
        fit, cost = self.fits[convention, approach], self.costs[convention]
        iv = fit.intervals
        out.update(success=fit.success, message=fit.message, n_points=fit.n_points)
        if approach == 3:
            law = fit.law
            a = law.beta / (law.alpha + cost.p * law.beta)
            out.update(a=a, b=1.0 - cost.p * a, law=law.to_dict())
            laws = iv.laws() if iv is not None else None
            if laws is not None:
                a_s = laws.beta / (laws.alpha + cost.p * laws.beta)
                out.update(a_ci=list(iv.band(a_s)["ci"]), b_ci=list(iv.band(1.0 - cost.p * a_s)["ci"]),
                           a_se=iv.band(a_s)["se"])
        else:
            b = fit.b if approach == 1 else 1.0 - cost.p * fit.a
            out.update(a=fit.a, b=b)
            if iv is not None:
                lo, hi = iv.ci["a"]
                b_ci = list(iv.ci["b"]) if approach == 1 else sorted([1.0 - cost.p * lo, 1.0 - cost.p * hi])
                out.update(a_ci=[lo, hi], b_ci=b_ci, a_se=iv.se["a"])
        cautions = [self.notes[convention, approach]] if (convention, approach) in self.notes else []
        if "a_ci" in out and not out["a_ci"][0] <= out["a"] <= out["a_ci"][1]:
            cautions.append("the estimate lies outside its own bootstrap interval: the resamples refit elsewhere "
                            "(too few runs to pin the fit down)")
        out["cautions"] = cautions
        out["at"] = {budget_key(C): self._at(fit, cost, approach, C) for C in budgets}
        return out

    def optimum(self, convention: str, approach: int, C: float) -> tuple[float, float]:
        """(N_opt, D_opt) at C from one approach under one convention (ConfigError when it was not fitted)."""
        if (convention, approach) not in self.fits:
            raise ConfigError(f"approach {approach}", self.errors.get((convention, approach), "not fitted"))
        entry = self._at(self.fits[convention, approach], self.costs[convention], approach, C)
        return entry["N_opt"], entry["D_opt"]

    def _at(self, fit: ScalingFit, cost: CostModel, approach: int, C: float) -> dict[str, Any]:
        if approach == 3:
            N, D = cost.law_optimum(fit.law, C)
            entry = {"flops": C, "N_opt": float(N), "D_opt": float(D), "loss": float(fit.law.loss(N, D))}
            if fit.intervals is not None:
                Ns, Ds = cost.law_optimum(fit.intervals.laws(), C)
                entry.update(N_opt_ci=list(fit.intervals.band(Ns)["ci"]), D_opt_ci=list(fit.intervals.band(Ds)["ci"]))
            return entry
        N = float(fit.k_N * C**fit.a)
        D = float(fit.k_D * C**fit.b) if approach == 1 else float(cost.tokens(N, C))
        return {"flops": C, "N_opt": N, "D_opt": D}

    def to_dict(self) -> dict[str, Any]:
        found = self.found
        best = {p.key for p in found.best}
        budgets = sorted(set(self.budgets) | {float(r["flops"]) for r in self.rungs})
        allocations = [self.allocation(c.name, k, budgets) for c in CONVENTIONS for k in APPROACHES]
        boot = self.bootstrap
        return {
            "version": FIT_VERSION, "sweep": str(self.sweep.path), "mode": self.mode, "budgets": self.budgets,
            "bootstrap": None if boot is None else {"n": int(boot.n), "level": boot.level, "seed": boot.seed},
            "runs": {"planned": found.n_planned, "fitted": len(found.points), "cells": len(found.best),
                     "excluded": [e.to_dict() for e in found.excluded]},
            "points": [{**p.to_dict(), "best": p.key in best} for p in found.points],
            "lr_cells": [c.to_dict() for c in found.lr_cells],
            "conventions": {c.name: {"label": c.label, "N": c.n_key, "C": "6ND" if c.six_nd else "counted",
                                     "cost": self.costs[c.name].to_dict() if c.name in self.costs else None}
                            for c in CONVENTIONS},
            "allocations": allocations,
            "fits": {f"{c}/{k}": _fit_dict(fit, budgets) for (c, k), fit in self.fits.items()},
            "rungs": self.rungs,
        }


def _fit_dict(fit: ScalingFit, budgets: list[float]) -> dict[str, Any]:
    """science's dict of a fit, approach 1's envelope thinned to ENVELOPE_POINTS levels (it has up to 1000)."""
    out = fit.to_dict(budgets=budgets)
    env = out.get("envelope")
    if env and len(env["C"]) > ENVELOPE_POINTS:
        idx = np.unique(np.linspace(0, len(env["C"]) - 1, ENVELOPE_POINTS).round().astype(int))
        out["envelope"] = {k: [v[i] for i in idx] for k, v in env.items()}
        out["envelope_thinned"] = f"{idx.size} of {len(env['C'])} levels, evenly spaced in log C"
    return out


def make_bootstrap(n: int, level: float = DEFAULT_LEVEL, seed: int = 0) -> Bootstrap | None:
    if isinstance(n, bool) or n < 0 or n == 1:
        raise ConfigError("--bootstrap", f"needs 0 or at least 2 resamples, got {n}")
    if not 0 < level < 1:
        raise ConfigError("--level", f"must be in (0, 1), got {level}")
    return Bootstrap(n=n, level=level, seed=seed) if n else None


def fit_sweep(sweep: SweepDir, *, bootstrap: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
              seed: int = 0) -> SweepFit:
    """Every approach under every convention; ConfigError naming the sweep folder when none can be fitted."""
    from isoflop.science.fit import Approach3
    from isoflop.science.isoflop import Approach1, Approach2

    plan = sweep.read_plan()
    boot = make_bootstrap(bootstrap, level, seed)
    found = collect(sweep, plan)
    result = SweepFit(sweep=sweep, mode=plan.mode, budgets=[float(c) for c in plan.budgets], found=found,
                      bootstrap=boot)
    pts = found.best
    L = np.array([p.loss for p in pts], dtype=float)
    D = np.array([p.D for p in pts], dtype=float)
    curves = _curves(pts, result)
    unboot: dict[str, dict[int, Any]] = {}
    for conv in CONVENTIONS:
        try:
            result.costs[conv.name] = CostModel.of(conv, pts) if pts else CostModel(6.0, 1.0, False)
        except ScienceError as e:
            result.costs[conv.name] = CostModel(6.0, 1.0, False)
            result.errors.update({(conv.name, k): str(e) for k in APPROACHES})
            continue
        N, C = conv.N(pts), conv.C(pts)
        def jobs_with(b: Bootstrap | None, conv: Convention = conv, N: np.ndarray = N, C: np.ndarray = C):
            return {
                1: lambda: _one_size_lead(Approach1(bootstrap=b).fit(_in_convention(curves, pts, conv))),
                2: lambda: Approach2(bootstrap=b).fit(N, _budget_labels(pts, C), L),
                3: lambda: Approach3(bootstrap=b).fit(N, D, L),
            }

        jobs, unboot[conv.name] = jobs_with(boot), jobs_with(None)
        for k, job in jobs.items():
            if k == 1 and isinstance(curves, str):
                result.errors[conv.name, k] = curves
                continue
            # resamples of a few runs can run the optimiser off to overflow; they are dropped as failed refits
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                _run(result, conv.name, k, job, unboot[conv.name][k] if boot is not None else None)
    if not result.fits:
        raise ConfigError(str(sweep.path), _too_few(found, result.errors))
    if not isinstance(curves, str):
        result.curves = _in_convention(curves, pts, CONVENTIONS[0])
    result.rungs = _rungs(sweep, found)
    return result


def sweep_fit(sweep: SweepDir, *, bootstrap: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
              seed: int = 0) -> dict[str, Any]:
    """`fit_sweep`, as the dict fit.json holds (written there too)."""
    out = jsonable(fit_sweep(sweep, bootstrap=bootstrap, level=level, seed=seed).to_dict())
    sweep.write_fit(out)
    return out


# ---------------------------------------------------------------------------------------------- helpers


def _run(result: SweepFit, convention: str, approach: int, job: Any, without_bootstrap: Any) -> None:
    """One fit into `result`: its ScalingFit, or why not. When only the bootstrap fails (too few resamples
    refit), the point estimate is kept without intervals and the reason noted."""
    try:
        result.fits[convention, approach] = _with_an_optimum(job(), approach)
        return
    except ScienceError as e:
        if without_bootstrap is None or not str(e).startswith("bootstrap"):
            result.errors[convention, approach] = str(e)
            return
        note = str(e)
    try:
        result.fits[convention, approach] = _with_an_optimum(without_bootstrap(), approach)
        result.notes[convention, approach] = f"no intervals ({note})"
    except ScienceError as e:
        result.errors[convention, approach] = str(e)


def _with_an_optimum(fit: ScalingFit, approach: int) -> ScalingFit:
    """Approach 3's fit, unless its law has no compute-optimal allocation: a non-positive exponent or coefficient
    (the loss does not fall with N or with D over these runs, e.g. every budget's smallest size is its best)."""
    if approach == 3:
        law = fit.law
        bad = [f"{k} = {getattr(law, k):.3g}" for k in ("alpha", "beta", "A", "B") if not getattr(law, k) > 0]
        if bad:
            raise ScienceError(f"the fitted law has {', '.join(bad)}: no compute-optimal allocation (the runs do "
                               "not bracket the optimum; train sizes on both sides of it)")
    return fit


def _one_size_lead(fit: ScalingFit) -> ScalingFit:
    """Approach 1's fit, unless one size leads at every level it kept: a slope through one N is no exponent."""
    if np.unique(fit.detail.N).size < 2:
        raise ScienceError(f"one size (N = {fit.detail.N[0]:.3g}) has the lowest loss at every FLOP level bracketed "
                           "by smaller and larger sizes: the lead must change between sizes for a slope")
    return fit


def _budget_labels(points: list[SweepPoint], C: np.ndarray) -> np.ndarray:
    """Each run's budget in this convention: the geometric mean of C over the runs of its planned budget."""
    budget = np.array([p.budget for p in points])
    out = np.empty_like(C)
    for b in np.unique(budget):
        at = budget == b
        out[at] = np.exp(np.log(C[at]).mean())
    return out


def _curves(points: list[SweepPoint], result: SweepFit) -> list[Curve] | str:
    """The training curves of the fitted runs, in their order; or why they cannot be read."""
    if len(points) < 2:
        return f"approach 1 needs the curves of at least 2 runs, {len(points)} fitted"
    try:
        return load_curves([result.sweep.run_dir(p.key).path for p in points], which="train")
    except ScienceError as e:
        return f"training curves: {e}"


def _in_convention(curves: list[Curve], points: list[SweepPoint], conv: Convention) -> list[Curve]:
    out = []
    for curve, point, N in zip(curves, points, conv.N(points), strict=True):
        tokens = curve.x("tokens")
        flops = 6.0 * N * tokens if conv.six_nd else curve.x("flops")
        out.append(Curve(point.key, float(N), curve.loss, {"tokens": tokens, "flops": flops}))
    return out


def _too_few(found: SweepPoints, errors: dict[tuple[str, int], str]) -> str:
    counts: dict[str, int] = {}
    for e in found.excluded:
        counts[e.status] = counts.get(e.status, 0) + 1
    text = f"{len(found.points)} of {found.n_planned} planned runs are fitted"
    if counts:
        text += " (" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ")"
    why = "; ".join(f"approach {k}: {errors.get(('total', k), 'not fitted')}" for k in APPROACHES)
    return f"{text}, too few for any fit: {why}"


def _rungs(sweep: SweepDir, found: SweepPoints) -> list[dict[str, Any]]:
    """The predictions `sweep predict` stored in the last fit.json, each with its rung's measurement now."""
    if not sweep.fit_file.is_file():
        return []
    previous = sweep.read_fit().get("rungs") or []
    measured = {p.key: p for p in found.rungs}
    status = {e.key: e for e in found.excluded}
    return [measure_rung(entry, measured.get(entry.get("key")), status.get(entry.get("key"))) for entry in previous]


def measure_rung(entry: dict[str, Any], point: SweepPoint | None, excluded: Any = None) -> dict[str, Any]:
    """A prediction with its rung's measured loss and |predicted − measured| / measured, when it has one."""
    out = {k: v for k, v in entry.items()
           if k not in ("measured_loss", "abs_error", "rel_error", "N_measured", "D_measured", "status", "reason")}
    if point is None:
        out.update(status=getattr(excluded, "status", "pending"),
                   reason=getattr(excluded, "reason", "not trained yet"))
        return out
    pred = float(out["predicted_loss"])
    return {**out, "status": "measured", "measured_loss": point.loss, "N_measured": point.N_total,
            "D_measured": point.D, "abs_error": abs(pred - point.loss), "rel_error": abs(pred - point.loss) / point.loss}


def records_of(points: list[SweepPoint], convention: Convention = CONVENTIONS[0]) -> Records:
    """The points as science Records (N in the convention, D, C, L) for science's plots."""
    return Records(convention.N(points), np.array([p.D for p in points]), convention.C(points),
                   np.array([p.loss for p in points]), tuple(p.key for p in points))


def jsonable(value: Any) -> Any:
    """Non-finite floats (and numpy scalars) as strict JSON has them: None, plain numbers."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
