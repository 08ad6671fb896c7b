"""The sweep report's plots, drawn from a `fit.SweepFit`: the isoFLOP curves with their parabolas and minima, the
compute-optimal N and D against C with the published exponents beside ours, the loss-compute frontier, and the
residuals of the approach-3 law (science.plots.plot_fit). matplotlib's Agg canvas on a bare Figure (no pyplot,
no global state), imported when a plot is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from isoflop.science.plots import sci
from isoflop.sweep.fit import CONVENTIONS, SweepFit

APPROACH_STYLE = {1: ("tab:green", "^", "approach 1 (curves)"), 2: ("tab:blue", "s", "approach 2 (isoFLOP)"),
                  3: ("tab:red", "o", "approach 3 (law)")}
CONVENTION_NAMES = {c.name: c.label for c in CONVENTIONS}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            ax.grid(True, which="major", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _budget_colors(budgets: list[float]) -> dict[float, str]:
    return {b: f"C{i % 10}" for i, b in enumerate(sorted(budgets))}


# ---------------------------------------------------------------------------------------------- isoFLOP curves


def plot_isoflop(result: SweepFit, path: str | Path) -> Path:
    """Loss against N per budget, one panel per counted-FLOPs convention (total and non-embedding N): every
    fitted run (hollow: a learning rate that lost its cell), the approach-2 parabola and its minimum (star)."""
    fig = _figure(13, 5)
    convs = [c for c in CONVENTIONS if not c.six_nd]
    axes = fig.subplots(1, len(convs), sharey=True)
    best = {p.key for p in result.found.best}
    colors = _budget_colors(sorted({p.budget for p in result.found.points}))
    for ax, conv in zip(axes, convs, strict=True):
        fit = result.fits.get((conv.name, 2))
        for budget, color in colors.items():
            pts = [p for p in result.found.points if p.budget == budget]
            N, L = conv.N(pts), np.array([p.loss for p in pts])
            won = np.array([p.key in best for p in pts])
            ax.scatter(N[won], L[won], color=color, s=28, zorder=3, label=f"C = {sci(budget)}")
            if (~won).any():
                ax.scatter(N[~won], L[~won], facecolors="none", edgecolors=color, s=28, alpha=0.6, zorder=2)
        if fit is not None:
            for profile in fit.detail.profiles:
                budget = min(colors, key=lambda b, c=profile.C: abs(np.log(b / c)))
                color, near = colors[budget], [p for p in result.found.best if p.budget == budget]
                # over the runs and out to the minimum: a vertex outside the sizes trained shows as one
                n = np.geomspace(min(conv.N(near).min(), profile.N_opt) / 1.3,
                                 max(conv.N(near).max(), profile.N_opt) * 1.3, 100)
                ax.plot(n, profile.loss(n), color=color, lw=1.3)
                ax.plot([profile.N_opt], [profile.L_opt], "*", color=color, ms=15, mec="black", zorder=5)
            ax.set_title(f"{conv.label}: N* ∝ C^{fit.a:.3f}", fontsize=10)
        else:
            ax.set_title(f"{conv.label}: {result.errors.get((conv.name, 2), 'no parabolas')}"[:90], fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel(f"parameters N ({conv.n_key})")
    axes[0].set_ylabel("final validation loss (nats/token)")
    axes[0].scatter([], [], facecolors="none", edgecolors="gray", s=28, label="other learning rates")
    axes[0].plot([], [], "*", color="gray", ms=12, mec="black", label="parabola minimum N*")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside right upper")
    fig.suptitle("isoFLOP profiles: loss against model size at each compute budget (approach 2)", fontsize=11)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- allocation


def plot_allocation(result: SweepFit, references: list[dict[str, Any]], path: str | Path,
                    convention: str = "total") -> Path:
    """N_opt(C) and D_opt(C) of each approach under `convention` (approach 3 with its bootstrap band, the
    per-budget minima of approach 2, the envelope of approach 1), and the exponent a of every approach and
    convention with its interval beside the published ones."""
    fig = _figure(16, 5.2)
    left, mid, right = fig.subplots(1, 3, width_ratios=[1, 1, 1.15])
    budgets = sorted(set(result.budgets) | {float(r["flops"]) for r in result.rungs})
    grid = np.geomspace(min(budgets) / 2, max(budgets) * 2, 60)
    cost = result.costs.get(convention)
    for k in (1, 2, 3):
        fit = result.fits.get((convention, k))
        if fit is None:
            continue
        color, marker, label = APPROACH_STYLE[k]
        alloc = result.allocation(convention, k, list(grid))
        N = np.array([alloc["at"][key]["N_opt"] for key in alloc["at"]])
        D = np.array([alloc["at"][key]["D_opt"] for key in alloc["at"]])
        text = f"{label}: a = {alloc['a']:.3f}" + (f" [{alloc['a_ci'][0]:.3f}, {alloc['a_ci'][1]:.3f}]"
                                                   if "a_ci" in alloc else "")
        left.plot(grid, N, color=color, lw=1.8, label=text)
        mid.plot(grid, D, color=color, lw=1.8, label=f"{label}: b = {alloc['b']:.3f}")
        if k == 3 and fit.intervals is not None:
            for ax, key in ((left, "N_opt_ci"), (mid, "D_opt_ci")):
                lo = [alloc["at"][c][key][0] for c in alloc["at"]]
                hi = [alloc["at"][c][key][1] for c in alloc["at"]]
                ax.fill_between(grid, lo, hi, color=color, alpha=0.25, lw=0,
                                label=f"approach 3, {fit.intervals.level:.0%} bootstrap band")
        if k == 2:
            C = np.array([p.C for p in fit.detail.profiles])
            n_star = np.array([p.N_opt for p in fit.detail.profiles])
            left.plot(C, n_star, marker, color=color, ms=8, mec="black", label="approach 2: parabola minima")
            mid.plot(C, cost.tokens(n_star, C), marker, color=color, ms=8, mec="black")
        if k == 1:
            env = fit.detail
            step = max(1, len(env.C) // 40)
            left.plot(env.C[::step], env.N[::step], marker, color=color, ms=4, alpha=0.6,
                      label="approach 1: envelope")
            mid.plot(env.C[::step], env.D[::step], marker, color=color, ms=4, alpha=0.6)
    for r in result.rungs:
        left.plot([r["flops"]], [r["N_planned"]], "D", color="magenta", ms=9, mec="black", zorder=6,
                  label=f"rung at C = {sci(r['flops'])} (N from approach {r['approach']})")
        mid.plot([r["flops"]], [r["D_planned"]], "D", color="magenta", ms=9, mec="black", zorder=6)
    for b in result.budgets:
        for ax in (left, mid):
            ax.axvline(b, color="gray", lw=0.6, ls=":")
    for ax, what in ((left, "N_opt (parameters)"), (mid, "D_opt (tokens)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs, counted)" if convention != "6nd" else "C = 6ND (FLOPs)")
        ax.set_ylabel(what)
        ax.legend(fontsize=7, loc="upper left")
    left.set_title(f"compute-optimal model size ({CONVENTION_NAMES[convention]})", fontsize=10)
    mid.set_title("compute-optimal tokens (dotted: the sweep's budgets)", fontsize=10)
    _forest(right, result, references)
    return _save(fig, path)


def _forest(ax: Any, result: SweepFit, references: list[dict[str, Any]]) -> None:
    """The exponent a of N_opt ∝ C^a: ours per approach and convention, then the published values."""
    rows: list[tuple[str, float, list[float] | None, str]] = []
    for conv in CONVENTIONS:
        for k in (1, 2, 3):
            alloc = result.allocation(conv.name, k, [])
            if "a" in alloc:
                rows.append((f"ours: approach {k}, {conv.label}", alloc["a"], alloc.get("a_ci"),
                             APPROACH_STYLE[k][0]))
    for ref in references:
        rows.append((ref["label"], ref["a"], ref.get("a_interval"), "dimgray"))
    y = np.arange(len(rows))[::-1]
    for yi, (label, a, ci, color) in zip(y, rows, strict=True):
        if ci is not None:
            ax.plot(ci, [yi, yi], color=color, lw=2.2, alpha=0.8)
        ax.plot([a], [yi], "o" if label.startswith("ours") else "D", color=color, ms=6, mec="black")
        ax.annotate(f"{a:.3f}", (a, yi), textcoords="offset points", xytext=(6, 4), fontsize=7)
    values = [v for _, a, ci, _ in rows for v in (a, *(ci or ()))]
    span = max(values) - min(values)
    ax.set_xlim(min(values) - 0.05 * span, max(values) + 0.12 * span)  # room for the last value's label
    n_ours = sum(r[0].startswith("ours") for r in rows)
    ax.axhline(y[n_ours - 1] - 0.5 if n_ours else len(rows), color="black", lw=0.8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.set_xlabel("a in N_opt ∝ C^a")
    level = result.bootstrap.level if result.bootstrap is not None else None
    ax.set_title("exponent a: ours" + (f" ({level:.0%} bootstrap intervals)" if level else "")
                 + " and published", fontsize=10)


# ---------------------------------------------------------------------------------------------- frontier


def plot_frontier(result: SweepFit, path: str | Path) -> Path:
    """Loss against counted compute: every fitted run's training curve and final loss (colour: log N), approach
    1's envelope, approach 2's minima, approach 3's compute-optimal loss L(N_opt(C), D_opt(C)) and the rungs
    (predicted and measured)."""
    fig = _figure(10, 6)
    ax = fig.subplots()
    pts = result.found.best
    N = np.array([p.N_total for p in pts])
    import matplotlib as mpl

    norm = mpl.colors.LogNorm(vmin=N.min(), vmax=N.max()) if len(N) else None
    cmap = mpl.colormaps["viridis"]
    for curve in result.curves:
        ax.plot(curve.x("flops"), curve.loss, color=cmap(norm(curve.N)), lw=0.8, alpha=0.45)
    scatter = ax.scatter([p.flops for p in pts], [p.loss for p in pts], c=N, cmap=cmap, norm=norm, s=30,
                         edgecolors="black", linewidths=0.4, zorder=3, label="runs (final loss)")
    fig.colorbar(scatter, ax=ax, label="parameters N_total")
    fit1, fit2, fit3 = (result.fits.get(("total", k)) for k in (1, 2, 3))
    if fit1 is not None:
        ax.plot(fit1.detail.C, fit1.detail.L, color="black", lw=1.6, ls="--", label="envelope (approach 1)")
    if fit2 is not None:
        ax.plot([p.C for p in fit2.detail.profiles], [p.L_opt for p in fit2.detail.profiles], "*", color="tab:blue",
                ms=14, mec="black", zorder=5, label="isoFLOP minima (approach 2)")
    top = max([*result.budgets, *[r["flops"] for r in result.rungs]])
    if fit3 is not None:
        C = np.geomspace(min(result.budgets) / 3, top * 2, 100)
        Nopt, Dopt = result.costs["total"].law_optimum(fit3.law, C)
        ax.plot(C, fit3.law.loss(Nopt, Dopt), color="tab:red", lw=2, label="L(N_opt, D_opt) of the approach-3 law")
    for r in result.rungs:
        ax.plot([r["flops"]], [r["predicted_loss"]], "D", mfc="none", mec="magenta", mew=2, ms=15, zorder=6,
                label=f"rung predicted: {r['predicted_loss']:.4f}")
        if r.get("measured_loss") is not None:  # drawn inside the prediction's diamond, which stays visible
            ax.plot([r["flops"]], [r["measured_loss"]], "o", color="magenta", ms=7, mec="black", zorder=7,
                    label=f"rung measured: {r['measured_loss']:.4f} ({100 * r['rel_error']:.2f} % off)")
    if len(pts):
        losses = [p.loss for p in pts]
        ax.set_ylim(min(losses + [r["predicted_loss"] for r in result.rungs]) * 0.97, max(losses) * 1.12)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, counted)")
    ax.set_ylabel("loss (nats/token); curves: training loss")
    ax.set_title("loss-compute frontier", fontsize=11)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def plot_residuals(result: SweepFit, path: str | Path) -> Path | None:
    """Approach 3 (total N): the runs against the law along each budget's line C = k·N^p·D (left), and the
    log residuals ln L − ln L_law against N per budget (right); None when approach 3 was not fitted."""
    fit = result.fits.get(("total", 3))
    if fit is None:
        return None
    fig = _figure(13, 5)
    left, right = fig.subplots(1, 2)
    law, cost, pts = fit.law, result.costs["total"], result.found.best
    colors = _budget_colors(sorted({p.budget for p in pts}))
    resid_all = []
    for budget, color in colors.items():
        at = [p for p in pts if p.budget == budget]
        N, D, L = (np.array([getattr(p, k) for p in at]) for k in ("N_total", "D", "loss"))
        n = np.geomspace(N.min() / 1.3, N.max() * 1.3, 100)
        left.scatter(N, L, color=color, s=28, zorder=3, label=f"C = {sci(budget)}")
        left.plot(n, law.loss(n, cost.tokens(n, budget)), color=color, lw=1.2)
        resid = np.log(L) - np.log(law.loss(N, D))
        resid_all.extend(resid)
        right.plot(N, resid, "o", color=color, ms=6)
    left.set_xscale("log")
    left.set_xlabel("parameters N (N_total)")
    left.set_ylabel("final validation loss (nats/token)")
    left.set_title(f"L = {law.E:.3f} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f}\n"
                   "lines: the law along each budget", fontsize=10)
    left.legend(fontsize=8)
    right.axhline(0, color="black", lw=1)
    right.set_xscale("log")
    right.set_xlabel("parameters N (N_total)")
    right.set_ylabel("ln L − ln L_law")
    rms = float(np.sqrt(np.mean(np.square(resid_all))))
    right.set_title(f"residuals of the approach-3 law (RMS {rms:.4f}, {len(pts)} runs)", fontsize=10)
    return _save(fig, path)
