"""`sweep report`: report/report.md, report/results.json and the plots of a sweep, from a fresh fit (which also
rewrites fit.json); and the plain-text table `sweep fit` prints.

Published exponents shown beside ours (REFERENCES), a in N_opt ∝ C^a and b in D_opt ∝ C^b:

- Chinchilla, Hoffmann et al. 2022 (arXiv 2203.15556), Table 2, with its 10th-90th percentile ranges:
  approach 1 a = 0.50 (0.488, 0.502), approach 2 a = 0.49 (0.462, 0.534), approach 3 a = 0.46 (0.454, 0.455);
  the same table quotes Kaplan et al. 2020 (arXiv 2001.08361) at a = 0.73, b = 0.27 (non-embedding N).
- Epoch AI, Besiroglu et al. 2024 (arXiv 2404.10102), approach 3 refitted on Hoffmann's data with the optimiser
  corrected: a = β/(α+β) = 0.513, bootstrap standard error 0.020 (shown here as ±1.2816 SE, a normal 80 % band).
- Llama 3, Dubey et al. 2024 (arXiv 2407.21783), §3.2.1: the compute-optimal number of training tokens
  D*(C) = A·C^α with (α, A) = (0.53, 0.29), fitted on isoFLOP minima from 6e18 to 1e22 FLOPs; the paper fits
  tokens, so b = 0.53 and a = 1 − b = 0.47 under C = 6ND.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isoflop.rundir import atomic
from isoflop.science.bootstrap import DEFAULT_LEVEL
from isoflop.science.plots import sci
from isoflop.sweep.fit import APPROACHES, CONVENTIONS, DEFAULT_BOOTSTRAP, SweepFit, fit_sweep, jsonable
from isoflop.sweep.layout import PLOTS, SweepDir

_Z80 = 1.2816  # the standard normal's 90th percentile: a central 80 % band is ±1.2816 SE
REFERENCES: list[dict[str, Any]] = [
    {"label": "Chinchilla approach 1 (Hoffmann 2022)", "a": 0.50, "b": 0.50, "a_interval": [0.488, 0.502],
     "source": "Hoffmann et al. 2022, arXiv 2203.15556, Table 2 (10th-90th percentiles)"},
    {"label": "Chinchilla approach 2 (Hoffmann 2022)", "a": 0.49, "b": 0.51, "a_interval": [0.462, 0.534],
     "source": "Hoffmann et al. 2022, arXiv 2203.15556, Table 2 (10th-90th percentiles)"},
    {"label": "Chinchilla approach 3 (Hoffmann 2022)", "a": 0.46, "b": 0.54, "a_interval": [0.454, 0.455],
     "source": "Hoffmann et al. 2022, arXiv 2203.15556, Table 2 (10th-90th percentiles)"},
    {"label": "Epoch AI approach 3 (Besiroglu 2024)", "a": 0.513, "b": 0.487,
     "a_interval": [0.513 - _Z80 * 0.020, 0.513 + _Z80 * 0.020],
     "source": "Besiroglu et al. 2024, arXiv 2404.10102: a = 0.513, bootstrap SE 0.020 (band: ±1.2816 SE)"},
    {"label": "Llama 3 (Dubey 2024)", "a": 0.47, "b": 0.53, "a_interval": None,
     "source": "Dubey et al. 2024, arXiv 2407.21783, §3.2.1: D*(C) = 0.29·C^0.53 (tokens); a = 1 − b"},
    {"label": "Kaplan 2020 (non-embedding N)", "a": 0.73, "b": 0.27, "a_interval": None,
     "source": "Kaplan et al. 2020, arXiv 2001.08361, as Hoffmann et al. 2022 Table 2 quotes it"},
]


def sweep_report(sweep: SweepDir, *, bootstrap: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
                 seed: int = 0) -> dict[str, Path]:
    """Fit the sweep (rewriting fit.json), draw the plots, write results.json and report.md (last); the paths
    written, by kind."""
    from isoflop.sweep import plots

    result = fit_sweep(sweep, bootstrap=bootstrap, level=level, seed=seed)
    data = jsonable(result.to_dict())
    sweep.write_fit(data)
    sweep.report_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    for kind, draw in (("isoflop", lambda p: plots.plot_isoflop(result, p)),
                       ("allocation", lambda p: plots.plot_allocation(result, REFERENCES, p)),
                       ("frontier", lambda p: plots.plot_frontier(result, p)),
                       ("residuals", lambda p: plots.plot_residuals(result, p))):
        target = sweep.plot_file(kind)
        tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")  # matplotlib picks the format by suffix
        if draw(tmp) is not None:
            tmp.replace(target)
            drawn[kind] = target
    results = {**data, "references": REFERENCES, "plots": {k: p.name for k, p in drawn.items()}}
    atomic.write_text(sweep.results_file, json.dumps(jsonable(results), indent=1) + "\n")
    atomic.write_text(sweep.report_file, render_markdown(result, data, drawn))
    return {"report": sweep.report_file, "results": sweep.results_file, **drawn}


# ---------------------------------------------------------------------------------------------- text


def _interval(ci: list[float] | None, fmt: str = ".3f") -> str:
    return "" if ci is None else f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def allocation_rows(data: dict[str, Any]) -> list[list[str]]:
    """One row per (convention, approach): a, b with intervals, N_opt at each budget, and the verdict."""
    budgets = [f"{c:g}" for c in data["budgets"]]
    rows = []
    for a in data["allocations"]:
        label = data["conventions"][a["convention"]]["label"]
        if "error" in a:
            rows.append([label, str(a["approach"]), "–", "–", *["–"] * len(budgets), f"not fitted: {a['error']}"])
            continue
        rows.append([label, str(a["approach"]), f"{a['a']:.3f}{_interval(a.get('a_ci'))}",
                     f"{a['b']:.3f}{_interval(a.get('b_ci'))}",
                     *[sci(a["at"][c]["N_opt"]) if c in a["at"] else "–" for c in budgets],
                     verdict(a)])
    return rows


def verdict(alloc: dict[str, Any]) -> str:
    """"ok", or "caution: " and why to doubt the fit (not converged, an extrapolated minimum, ...)."""
    cautions = ([] if alloc["success"] else [alloc["message"]]) + list(alloc.get("cautions", []))
    return "ok" if not cautions else "caution: " + "; ".join(cautions)


def _table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def _plain(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def _summary(data: dict[str, Any]) -> str:
    runs = data["runs"]
    text = (f"{runs['fitted']} of {runs['planned']} planned runs fitted ({runs['cells']} cells"
            + (", best learning rate of each" if data["lr_cells"] else "") + f"), {len(runs['excluded'])} left out")
    boot = data["bootstrap"]
    text += (f"; intervals: {boot['level']:.0%}, {boot['n']} bootstrap resamples" if boot else "; no bootstrap")
    return text


def rung_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in data.get("rungs", []):
        measured = r.get("measured_loss")
        rows.append([r["key"], sci(r["flops"]), str(r["approach"]), sci(r["N_planned"]), sci(r["D_planned"]),
                     f"{r['predicted_loss']:.4f}", "–" if measured is None else f"{measured:.4f}",
                     "–" if measured is None else f"{100 * r['rel_error']:.2f} %",
                     r["status"] if measured is None else "measured"])
    return rows


RUNG_HEADER = ["rung", "C", "N from approach", "N", "D", "predicted loss", "measured loss",
               "|pred − meas| / meas", "status"]


def fit_table(data: dict[str, Any]) -> str:
    """What `sweep fit` prints: the allocation under each convention and approach, then what was left out."""
    budgets = [f"N_opt@{sci(c)}" for c in data["budgets"]]
    parts = [f"sweep {data['sweep']} ({data['mode']} mode): {_summary(data)}", "",
             "N_opt ∝ C^a, D_opt ∝ C^b",
             _plain(["convention", "approach", "a", "b", *budgets, "verdict"], allocation_rows(data))]
    edges = [c for c in data["lr_cells"] if c["edge_distance"] == 0]
    if edges:
        parts += ["", f"{len(edges)} of {len(data['lr_cells'])} cells have their best learning rate at the grid's "
                      "edge (the optimum may lie beyond it): "
                      + ", ".join(f"C={sci(c['budget'])} N={sci(c['target_params'])} x{c['best_multiplier']:g}"
                                  for c in edges)]
    if data["runs"]["excluded"]:
        parts += ["", "left out:"] + [f"  {e['key']}: {e['status']}: {e['reason']}" for e in data["runs"]["excluded"]]
    if data.get("rungs"):
        parts += ["", _plain(RUNG_HEADER, rung_rows(data))]
    return "\n".join(parts)


def render_markdown(result: SweepFit, data: dict[str, Any], plots: dict[str, Path]) -> str:
    budgets = [f"N_opt at {sci(c)}" for c in data["budgets"]]
    level = f"{data['bootstrap']['level']:.0%} bootstrap intervals" if data["bootstrap"] else "no bootstrap"
    parts = [f"# Sweep report: {data['sweep']}", "",
             f"Mode `{data['mode']}`, budgets {', '.join(sci(c) for c in data['budgets'])} FLOPs (counted). "
             f"{_summary(data)}.", "",
             "## Compute-optimal allocation", "",
             f"N_opt ∝ C^a and D_opt ∝ C^b from Chinchilla's three approaches (Hoffmann et al. 2022), {level} in "
             "brackets, under three parameter conventions: total N with the engine's counted FLOPs, non-embedding "
             "N with counted FLOPs, and total N with C = 6ND. Approach 1 reads the runs' training curves, "
             "approach 2 fits a parabola per budget, approach 3 the law L = E + A/N^α + B/D^β.", "",
             _table(["convention", "approach", "a", "b", *budgets, "verdict"], allocation_rows(data)), ""]
    costs = [f"{c['label']}: C = {c['cost']['k']:.3g}·N^{c['cost']['p']:.3f}·D" for c in data["conventions"].values()
             if c.get("cost")]
    parts += ["Cost of N parameters on D tokens in each convention (fitted on the runs for counted FLOPs): "
              + "; ".join(costs) + ".", ""]
    fit3 = next((a for a in data["allocations"] if a["convention"] == "total" and a["approach"] == 3 and "law" in a),
                None)
    if fit3 is not None:
        law = fit3["law"]
        parts += [f"Approach 3 law (total N): L = {law['E']:.4f} + {law['A']:.4g}/N^{law['alpha']:.4f} + "
                  f"{law['B']:.4g}/D^{law['beta']:.4f}.", ""]
    parts += ["## Published exponents", "",
              _table(["source", "a", "b", "interval of a", "reference"],
                     [[r["label"], f"{r['a']:.3f}", f"{r['b']:.3f}",
                       _interval(r["a_interval"]).strip() or "–", r["source"]] for r in REFERENCES]), ""]
    if data["lr_cells"]:
        parts += ["## Learning-rate grid", "",
                  "The best multiplier per (budget, size) cell and its distance from the grid's edge (0: the "
                  "smallest or largest multiplier won, so the optimum may lie outside the grid).", "",
                  _table(["budget", "target N", "multipliers", "losses", "best", "steps from edge", "flag"],
                         [[sci(c["budget"]), sci(c["target_params"]), ", ".join(f"{m:g}" for m in c["multipliers"]),
                           ", ".join("–" if v is None else f"{v:.4f}" for v in c["losses"]),
                           f"{c['best_multiplier']:g}", str(c["edge_distance"]),
                           "at low edge" if c["at_low_edge"] else "at high edge" if c["at_high_edge"] else ""]
                          for c in data["lr_cells"]]), ""]
    excluded = data["runs"]["excluded"]
    parts += ["## Runs left out of the fit", ""]
    parts += ([_table(["run", "status", "reason"], [[e["key"], e["status"], e["reason"]] for e in excluded]), ""]
              if excluded else ["None: every planned run is complete and fitted.", ""])
    if data.get("rungs"):
        parts += ["## Validating rung", "",
                  "The compute-optimal model the fitted law predicts at a budget beyond the sweep's, trained as a "
                  "run of the sweep; the loss is predicted by the approach-3 law at the rung's planned N and D.", "",
                  _table(RUNG_HEADER, rung_rows(data)), ""]
    captions = {"isoflop": "isoFLOP profiles with their parabolas and minima",
                "allocation": "N_opt(C) and D_opt(C), and the exponent a beside the published ones",
                "frontier": "the loss-compute frontier", "residuals": "the approach-3 law and its residuals"}
    parts += ["## Plots", ""] + [f"![{captions[k]}]({plots[k].name})\n" for k in PLOTS if k in plots]
    failed = [f"approach {k} ({c.label}): {result.errors[c.name, k]}" for c in CONVENTIONS for k in APPROACHES
              if (c.name, k) in result.errors]
    if failed:
        parts += ["## Not fitted", ""] + [f"- {line}" for line in failed] + [""]
    return "\n".join(parts)
