"""isoflop-sweep: one CPU-sized sweep in both modes, the validating rung, and the comparison of the two modes.

Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", §5) propose
cooldown forks off one warmup-stable run per size instead of one run per (budget, size); Hoffmann et al. 2022
fit the compute-optimal allocation from isoFLOP profiles. The study plans the same cells twice (OUT/grid:
`mode = "grid"`, OUT/fork: `mode = "fork"`), trains both with the sweep executor (`--jobs`), fits each with
approaches 1-3, trains the grid fit's predicted optimum at a budget above every budget of the sweep (the rung),
and compares: the exponent a of N_opt ∝ C^a from each mode, the FLOPs each mode spent, and the rung's predicted
against measured loss.

The sweeps are ordinary sweep folders: `isoflop sweep status|fit|report OUT/grid` work on them, and a rerun of
the study skips what is done and resumes what stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from isoflop.rundir import RunDir
from isoflop.studies import Study

MODES = ("grid", "fork")

#: The sweep both modes plan: the `tiny` recipe at byte level (a 320-row embedding keeps 20k-parameter models
#: buildable), 128-token context, three budgets 2.8x apart and the same five sizes a factor 2 apart at every budget,
#: head size 16 and a fixed aspect ratio of 20 so that neighbouring sizes have similar shapes. The sizes are
#: explicit because at byte level and these budgets the optimum sits far below Hoffmann et al.'s N_opt: a first
#: sweep centred on it (LOG.md, 2026-12-08) had its smallest size, 54k parameters at 60 tokens per parameter,
#: best at 2e12 FLOPs, by 0.07 nats over the next.
FULL_SPEC = """\
base = "tiny"
budgets = [1e12, 2.8e12, 8e12]
sizes = [2e4, 4e4, 8e4, 1.6e5, 3.2e5]
mode = "{mode}"
cooldown = 0.2
set = ["data.tokenizer.kind=byte", "data.seq_len=128", "data.max_bytes=60000000"]

[shape]
head_dim = 16
aspect = 20
tolerance = 0.1
"""
FULL_RUNG_FLOPS = 1.6e13
"""Twice the largest budget: the rung extrapolates the fitted law."""

SMOKE_SPEC = """\
base = "tiny"
budgets = [2e10, 6e10]
sizes = [1e4, 2e4, 4e4]
mode = "{mode}"
cooldown = 0.2
evals = 4
set = ["data.tokenizer.kind=byte", "data.seq_len=32", "data.max_bytes=300000", "eval.batches=2"]

[shape]
head_dim = 16
aspect = 20
tolerance = 0.15
"""
SMOKE_RUNG_FLOPS = 1.2e11
SMOKE_BOOTSTRAP = 20
FULL_BOOTSTRAP = 200


class IsoflopSweep(Study):
    name = "isoflop-sweep"
    description = "a CPU sweep in grid and fork mode: the same exponents for a fraction of the FLOPs? + the rung"
    claim = ("Cooldown forks off one warmup-stable run per model size give the same scaling-law points as "
             "training every (budget, size) cell from scratch, for a fraction of the FLOPs (Hägele et al. 2024, "
             "§5); and a law fitted on a sweep predicts the loss of its compute-optimal model at a larger budget.")

    def spec_text(self, mode: str, *, smoke: bool) -> str:
        return (SMOKE_SPEC if smoke else FULL_SPEC).format(mode=mode)

    def rung_flops(self, *, smoke: bool) -> float:
        return SMOKE_RUNG_FLOPS if smoke else FULL_RUNG_FLOPS

    def execute(self, out: Path, *, smoke: bool, overrides: list[str], jobs: int,
                progress: Callable[[str], None]) -> dict[str, RunDir]:
        """Plan both sweeps, train them, fit them, train the rung; every run directory, as "<mode>/<key>"."""
        from isoflop.config import ConfigError
        from isoflop.sweep.grid import design
        from isoflop.sweep.layout import SweepDir
        from isoflop.sweep.local import run_local
        from isoflop.sweep.predict import sweep_predict
        from isoflop.sweep.spec import parse_spec

        if overrides:
            raise ConfigError("--set", "isoflop-sweep plans its runs from its own sweep spec; --set is not taken")
        bootstrap = SMOKE_BOOTSTRAP if smoke else FULL_BOOTSTRAP
        sweeps = {}
        for mode in MODES:  # both plans before any training: a bad folder is refused before work
            text = self.spec_text(mode, smoke=smoke)
            sweep = SweepDir(out / mode)
            sweep.place(text, design(parse_spec(text, where=f"{self.name} {mode} spec"), out))
            sweeps[mode] = sweep
        for mode, sweep in sweeps.items():
            progress(f"{mode}: training {len(sweep.read_plan().runs)} runs with --jobs {jobs}")
            summary = run_local(sweep, jobs=jobs, say=lambda line, m=mode: progress(f"{m}: {line}"))
            if summary.exit_code():
                raise ConfigError(str(sweep.path), "some runs failed: see `isoflop sweep status " f"{sweep.path}`")
        progress(f"grid: training the rung at {self.rung_flops(smoke=smoke):.3g} FLOPs")
        try:
            sweep_predict(sweeps["grid"], flops=self.rung_flops(smoke=smoke), approach=3, bootstrap=bootstrap)
        except ConfigError as e:  # e.g. a fit whose optimum no shape can build: the report says so
            self.rung_problem = str(e)
            progress(f"grid: no rung: {e}")
        for mode, sweep in sweeps.items():
            progress(f"{mode}: fitting and reporting")
            from isoflop.sweep.report import sweep_report

            sweep_report(sweep, bootstrap=bootstrap)
        return {f"{mode}/{key}": sweep.run_dir(key) for mode, sweep in sweeps.items() for key in sweep.read_plan().keys()}

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        from isoflop.sweep.layout import SweepDir

        first = {mode: next(r for name, r in run_dirs.items() if name.startswith(f"{mode}/")) for mode in MODES}
        sweeps = {mode: SweepDir(run.path.parents[1]) for mode, run in first.items()}
        fits = {mode: sweep.read_fit() for mode, sweep in sweeps.items()}
        plans = {mode: sweep.read_plan() for mode, sweep in sweeps.items()}
        spent = {mode: sum(r.bill_flops for r in plans[mode].runs if r.role != "rung") for mode in MODES}
        rows = []
        for conv in ("total", "non_embedding", "6nd"):
            for approach in (1, 2, 3):
                a = {mode: _allocation(fits[mode], conv, approach) for mode in MODES}
                rows.append({"convention": conv, "approach": approach,
                             "a_grid": a["grid"].get("a"), "a_grid_ci": _ci(a["grid"]), "grid_verdict": _verdict(a["grid"]),
                             "a_fork": a["fork"].get("a"), "a_fork_ci": _ci(a["fork"]), "fork_verdict": _verdict(a["fork"]),
                             "delta_a": (a["fork"]["a"] - a["grid"]["a"]) if "a" in a["grid"] and "a" in a["fork"]
                             else None})
        share = spent["fork"] / spent["grid"]
        rung = _rung(fits["grid"])
        headline = next(r for r in rows if r["convention"] == "total" and r["approach"] == 3)
        findings = [
            f"FLOPs: fork spent {spent['fork']:.3g} against grid's {spent['grid']:.3g} on the same cells: "
            f"{share:.1%} (target <= 40 %). For one size the share is (M_max + f·Σ_others M_i) / Σ M_i (Hägele et al. "
            f"2024, §5): with budgets {_spacing(plans['grid'].budgets)} apart the largest budget alone is most of a "
            "size's bill.",
            f"Exponent a of N_opt ∝ C^a (total N, approach 3): grid {_num(headline['a_grid'])}, fork "
            f"{_num(headline['a_fork'])}, Δa = {_num(headline['delta_a'], '+.3f')} (target |Δa| <= 0.03).",
        ]
        findings.append(_resolution(_allocation(fits["grid"], "total", 3), _allocation(fits["fork"], "total", 3)))
        if getattr(self, "rung_problem", None):
            findings.append(f"No rung was trained: {self.rung_problem}.")
        elif rung is not None and rung.get("measured_loss") is not None:
            findings.append(
                f"The rung at {rung['flops']:.3g} FLOPs (N = {rung['N_planned']:.3g}, D = {rung['D_planned']:.3g}): "
                f"predicted loss {rung['predicted_loss']:.4f}, measured {rung['measured_loss']:.4f}, error "
                f"{rung['rel_error']:.2%} (target <= 2 %).")
        if smoke:
            findings.insert(0, "SMOKE run (seconds-long, not a measurement).")
        return {
            "study": self.name, "title": "One sweep, two modes: grid against cooldown forks", "claim": self.claim,
            "setting": _setting(plans["grid"], smoke),
            "findings": findings,
            "columns": [{"key": "convention", "label": "N convention", "format": "s"},
                        {"key": "approach", "label": "approach", "format": "d"},
                        {"key": "a_grid", "label": "a (grid)", "format": ".3f"},
                        {"key": "a_grid_ci", "label": "interval (grid)", "format": "s"},
                        {"key": "grid_verdict", "label": "grid fit", "format": "s"},
                        {"key": "a_fork", "label": "a (fork)", "format": ".3f"},
                        {"key": "a_fork_ci", "label": "interval (fork)", "format": "s"},
                        {"key": "fork_verdict", "label": "fork fit", "format": "s"},
                        {"key": "delta_a", "label": "fork - grid", "format": "+.3f"}],
            "rows": rows,
            "plot": _plot(fits, rung),
            "data": {"flops_spent": spent, "fork_share": share, "plan_bills": plans["grid"].bills, "rung": rung},
        }


def _allocation(fit: dict[str, Any], convention: str, approach: int) -> dict[str, Any]:
    return next((a for a in fit["allocations"] if a["convention"] == convention and a["approach"] == approach), {})


def _ci(alloc: dict[str, Any]) -> str:
    ci = alloc.get("a_ci")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ("not fitted" if "a" not in alloc else "")


def _resolution(grid: dict[str, Any], fork: dict[str, Any]) -> str:
    """Whether the two modes' exponents can be told apart at this sweep's resolution (their bootstrap intervals)."""
    if "a_ci" not in grid or "a_ci" not in fork:
        return "Verdict on the exponents: inconclusive (no bootstrap intervals for both modes)."
    fork_in_grid = grid["a_ci"][0] <= fork["a"] <= grid["a_ci"][1]
    grid_in_fork = fork["a_ci"][0] <= grid["a"] <= fork["a_ci"][1]
    widths = f"{grid['a_ci'][1] - grid['a_ci'][0]:.2f} (grid) and {fork['a_ci'][1] - fork['a_ci'][0]:.2f} (fork)"
    seen = {(True, True): "each mode's estimate lies inside the other's bootstrap interval",
            (True, False): "the fork estimate lies inside the grid's bootstrap interval, the grid's just outside the "
                           "fork's",
            (False, True): "the grid estimate lies inside the fork's bootstrap interval, the fork's just outside the "
                           "grid's",
            (False, False): "neither estimate lies inside the other's bootstrap interval"}[fork_in_grid, grid_in_fork]
    return (f"Verdict on the exponents: {seen}; the intervals are {widths} wide, so the 0.03 target is far below what "
            "three budgets and one seed per cell resolve: "
            + ("inconclusive." if fork_in_grid or grid_in_fork else "the modes differ."))


def _verdict(alloc: dict[str, Any]) -> str:
    """"ok", "caution" (the fit was made; its note says why to doubt it, e.g. an extrapolated minimum), or
    "not fitted"."""
    from isoflop.sweep.report import verdict

    if "a" not in alloc:
        return "not fitted"
    return "ok" if verdict(alloc) == "ok" else "caution"


def _spacing(budgets: list[float]) -> str:
    ratios = [b / a for a, b in zip(budgets, budgets[1:], strict=False)]
    return f"{min(ratios):.2g}x" if ratios and max(ratios) / min(ratios) < 1.05 else \
        "/".join(f"{r:.2g}x" for r in ratios)


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _rung(fit: dict[str, Any]) -> dict[str, Any] | None:
    return fit["rungs"][-1] if fit.get("rungs") else None


def _setting(plan: Any, smoke: bool) -> str:
    spec = plan.spec
    sizes = spec.get("sizes")
    sized = (f"sizes {', '.join(f'{n:.3g}' for n in sizes)} at every budget" if isinstance(sizes, list) else
             f"{sizes} sizes per budget a factor {spec.get('spread')} apart around the {spec.get('prior')} N_opt")
    return (f"{'SMOKE: ' if smoke else ''}base `{spec.get('base')}` with {spec.get('set')}; budgets "
            f"{', '.join(f'{c:.3g}' for c in plan.budgets)} FLOPs; {sized}; learning rate and batch by the "
            f"{spec.get('hparams', {}).get('kind', 'deepseek')} rule; fork mode: WSD with a {spec.get('cooldown')} "
            "cooldown (1 - sqrt), grid mode: the base's cosine. One seed per cell.")


def _plot(fits: dict[str, dict[str, Any]], rung: dict[str, Any] | None) -> dict[str, Any]:
    """IsoFLOP points of both modes (loss against N, one series per mode and budget), and N_opt(C) from
    approach 2's minima and approach 3's law of each mode."""
    loss_series, alloc_series = [], []
    for mode, style in (("grid", "o-"), ("fork", "s--")):
        fit = fits[mode]
        by_budget: dict[float, list[tuple[float, float]]] = {}
        for p in fit["points"]:
            if p.get("best") and p.get("budget") is not None:
                by_budget.setdefault(float(p["budget"]), []).append((p["N_total"], p["loss"]))
        for i, (budget, pts) in enumerate(sorted(by_budget.items())):
            pts.sort()  # one colour per budget, the mode by line style
            loss_series.append({"label": f"{mode} C={budget:.2g}", "x": [n for n, _ in pts], "y": [v for _, v in pts],
                                "style": style, "color": f"C{i}"})
        alloc = _allocation(fit, "total", 3)
        at = sorted(alloc.get("at", {}).values(), key=lambda e: e["flops"])
        if at:
            alloc_series.append({"label": f"{mode}: approach 3, a = {alloc['a']:.3f}", "x": [e["flops"] for e in at],
                                 "y": [e["N_opt"] for e in at], "style": style})
    if rung is not None and rung.get("measured_loss") is not None:
        loss_series.append({"label": "rung (measured)", "x": [rung["N_planned"]], "y": [rung["measured_loss"]],
                            "style": "k*"})
        loss_series.append({"label": "rung (predicted)", "x": [rung["N_planned"]], "y": [rung["predicted_loss"]],
                            "style": "kx"})
    return {"title": "isoflop-sweep: grid against fork", "panels": [
        {"title": "isoFLOP profiles", "xlabel": "total parameters N", "ylabel": "final val loss (nats/token)",
         "xscale": "log", "series": loss_series},
        {"title": "compute-optimal N from each mode's fit", "xlabel": "training FLOPs C", "ylabel": "N_opt",
         "xscale": "log", "yscale": "log", "series": alloc_series}]}
