"""Pictures for the planner. matplotlib is imported lazily, and drawn with the Agg canvas on a bare `Figure`
(no pyplot, so no global backend or figure state is touched); the numbers come from the fits and the planner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

N_COLOR, D_COLOR, RATIO_COLOR = "tab:blue", "tab:orange", "tab:green"
METHODS = {"mvn": "bootstrap covariance, MVN draws", "percentile": "bootstrap fits",
           "independent": "independent SEs"}


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # matplotlib is optional: only plots need it
        raise ImportError("plotting needs matplotlib (pip install matplotlib)") from e
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Any, axes: Any, path: str | Path) -> Path:
    """Grid lines on every panel, then write the PNG."""
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


def _band(ax: Any, curve: dict[str, Any], key: str, color: str, label: str) -> None:
    C = curve["flops"]
    ax.plot(C, curve[key], color=color, lw=2, label=label)
    if f"{key}_lo" in curve:
        ax.fill_between(C, curve[f"{key}_lo"], curve[f"{key}_hi"], color=color, alpha=0.2, lw=0,
                        label=f"{curve['level']:.0%} interval ({METHODS.get(curve['method'], curve['method'])})")


def sci(x: float) -> str:
    """3 significant digits, exponent without padding: 7.03e9."""
    text = f"{x:.3g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def _mark(ax: Any, budget: dict[str, Any], key: str, color: str, text: str, offset: tuple[int, int]) -> None:
    """The budget's point, its interval as an error bar and in the label when `budget["intervals"]` has one."""
    value, interval = budget[key], (budget.get("intervals") or {}).get(key)
    if interval is not None:
        lo, hi = interval
        ax.errorbar([budget["flops"]], [value], yerr=[[value - lo], [hi - value]], fmt="none", ecolor="black",
                    capsize=4, lw=1.2, zorder=4)
        text += f"\n({sci(lo)} to {sci(hi)})"
    ax.plot([budget["flops"]], [value], "o", color=color, ms=8, mec="black", zorder=5)
    ax.annotate(text, (budget["flops"], value), textcoords="offset points", xytext=offset, fontsize=9,
                va="top" if offset[1] < 0 else "bottom",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})


def plot_allocation(path: str | Path, curve: dict[str, Any], budget: dict[str, float], title: str) -> Path:
    """Two panels over a range of budgets: N_opt and D_opt against C (log-log), and tokens per parameter against
    C; bands where `curve` carries `<key>_lo`/`<key>_hi` (from `uncertainty.allocation_curve`); the asked budget
    (`budget`: flops, N_opt, D_opt, tokens_per_param, optional `intervals` {key: [lo, hi]}) marked on both."""
    fig = _figure(12, 4.8)
    left, right = fig.subplots(1, 2)
    C = budget["flops"]

    _band(left, curve, "N_opt", N_COLOR, "N_opt (parameters)")
    _band(left, curve, "D_opt", D_COLOR, "D_opt (tokens)")
    left.set_xscale("log")
    left.set_yscale("log")
    for key, color, unit in (("N_opt", N_COLOR, "params"), ("D_opt", D_COLOR, "tokens")):
        _mark(left, budget, key, color, f"{sci(budget[key])} {unit}", (8, -16 if key == "N_opt" else 8))
    left.set_ylabel("N_opt (parameters), D_opt (tokens)")
    left.set_title("Compute-optimal allocation")

    _band(right, curve, "tokens_per_param", RATIO_COLOR, "D_opt / N_opt")
    right.set_xscale("log")
    right.axhline(20, color="gray", ls=":", lw=1, label="20 tokens/param (Chinchilla rule of thumb)")
    _mark(right, budget, "tokens_per_param", RATIO_COLOR, f"{budget['tokens_per_param']:.1f} tokens/param", (8, 8))
    ratio_hi = curve.get("tokens_per_param_hi", curve["tokens_per_param"])
    right.set_ylim(0, max(float(np.max(ratio_hi)), 25.0) * 1.08)
    right.set_ylabel("tokens per parameter")
    right.set_title("Tokens per parameter")

    for ax in (left, right):
        ax.axvline(C, color="black", ls="--", lw=1, label=f"budget C = {sci(C)} FLOPs")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


def plot_frontier(curves: Any, frontier: Any, path: str | Path) -> Path:
    """Each model's loss against cost (log x), the Pareto frontier over them, and its crossovers marked."""
    fig = _figure(8, 5)
    ax = fig.subplots()
    for curve in curves:
        x = curve.x(frontier.axis)
        order = np.argsort(x)
        size = f" ({sci(curve.N)} params)" if curve.N else ""
        ax.plot(x[order], curve.loss[order], lw=1.2, alpha=0.75, label=f"{curve.name}{size}")
    ax.plot(frontier.cost, frontier.loss, color="black", lw=2.2, ls="--", label="Pareto frontier")
    for c in frontier.crossovers:
        ax.plot([c.cost], [c.loss], "o", color="red", ms=7, mec="black", zorder=5)
        ax.annotate(f"{c.before} \u2192 {c.after}\n{sci(c.cost)}", (c.cost, c.loss), textcoords="offset points",
                    xytext=(6, 8), fontsize=8, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8})
    ax.set_xscale("log")
    ax.set_xlabel({"flops": "training FLOPs", "elapsed_s": "wall time (s)", "gpu_hours": "GPU-hours",
                   "tokens": "training tokens", "step": "step"}.get(frontier.axis, frontier.axis))
    ax.set_ylabel("loss")
    ax.set_title("Loss against cost: who leads where")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


def plot_fit(records: Any, fit: Any, drop_highest: int, path: str | Path) -> Path:
    """Approach 3: observed loss against N with the fitted law's curve at each run's D (left); log-space
    residuals against N, colored by tokens per parameter (right). Dropped runs are drawn hollow."""
    fig = _figure(12, 4.8)
    left, right = fig.subplots(1, 2)
    N, D, L = records.N, records.D, records.L
    kept = np.ones(len(L), dtype=bool)
    if drop_highest:
        kept[np.argsort(L)[-drop_highest:]] = False
    ratio = np.log10(D / N)
    scatter = left.scatter(N[kept], L[kept], c=ratio[kept], cmap="viridis", s=18, label="runs")
    left.scatter(N[~kept], L[~kept], facecolors="none", edgecolors="red", s=30, label="dropped")
    for c in np.geomspace((6 * N * D).min(), (6 * N * D).max(), 6):  # the law along isoFLOP lines
        n = np.geomspace(N.min(), N.max(), 200)
        left.plot(n, fit.law.loss(n, c / (6 * n)), color="gray", lw=0.8, alpha=0.7)
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("loss")
    law = fit.law
    left.set_title(f"E={law.E:.3f}  A={law.A:.1f}  B={law.B:.1f}  α={law.alpha:.3f}  β={law.beta:.3f}\n"
                   "gray: the fit along isoFLOP lines", fontsize=10)
    left.legend(fontsize=8)
    fig.colorbar(scatter, ax=left, label="log10 tokens per parameter")
    resid = np.log(L) - np.log(fit.law.loss(N, D))
    right.scatter(N[kept], resid[kept], c=ratio[kept], cmap="viridis", s=18)
    right.scatter(N[~kept], resid[~kept], facecolors="none", edgecolors="red", s=30)
    right.axhline(0, color="black", lw=1)
    right.set_xscale("log")
    right.set_xlabel("parameters N")
    right.set_ylabel("log L − log L_fit")
    right.set_title(f"residuals (RMS {np.sqrt(np.mean(resid[kept] ** 2)):.4f})", fontsize=10)
    return _finish(fig, (left, right), path)


def plot_isoflop(records: Any, result: Any, path: str | Path) -> Path:
    """Approach 2: loss against N for each budget with its parabola and minimum (left); N* against C with
    the fitted power law (right)."""
    fig = _figure(12, 4.8)
    left, right = fig.subplots(1, 2)
    profiles = result.detail.profiles
    colors = [f"C{i % 10}" for i in range(len(profiles))]
    for profile, color in zip(profiles, colors, strict=True):
        near = np.abs(np.log(records.C / profile.C)) < 0.1
        left.scatter(records.N[near], records.L[near], color=color, s=16)
        n = np.geomspace(records.N[near].min(), records.N[near].max(), 100)
        c2, c1, c0 = profile.coef
        left.plot(n, c2 * np.log(n) ** 2 + c1 * np.log(n) + c0, color=color, lw=1.2, label=f"C = {sci(profile.C)}")
        left.plot([profile.N_opt], [profile.L_opt], "*", color=color, ms=12, mec="black")
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("loss")
    left.set_title("isoFLOP profiles (stars: minima)", fontsize=10)
    left.legend(fontsize=7)
    C = np.array([p.C for p in profiles])
    n_opt = np.array([p.N_opt for p in profiles])
    right.scatter(C, n_opt, color="black", zorder=3, label="N* per budget")
    grid = np.geomspace(C.min() / 3, C.max() * 3, 50)
    right.plot(grid, result.N_opt(grid), color=N_COLOR, label=f"N_opt ∝ C^{result.a:.3f}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("training compute C (FLOPs)")
    right.set_ylabel("N_opt (parameters)")
    right.set_title("compute-optimal model size", fontsize=10)
    right.legend(fontsize=8)
    return _finish(fig, (left, right), path)


def plot_envelope(curves: Any, result: Any, path: str | Path) -> Path:
    """Approach 1: every training curve against FLOPs and the lower envelope, with the fitted N_opt ∝ C^a."""
    fig = _figure(12, 4.8)
    left, right = fig.subplots(1, 2)
    for curve in curves:
        left.plot(curve.x("flops"), curve.loss, lw=1, alpha=0.7, label=f"{curve.name} ({sci(curve.N)})")
    env = result.detail
    left.plot(env.C, env.L, color="black", lw=2, ls="--", label="envelope")
    left.set_xscale("log")
    left.set_xlabel("training compute C (FLOPs)")
    left.set_ylabel("loss")
    left.legend(fontsize=7)
    right.scatter(env.C, env.N, s=6, color="black", label="N on the envelope")
    right.plot(env.C, result.N_opt(env.C), color=N_COLOR, label=f"N_opt ∝ C^{result.a:.3f}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("training compute C (FLOPs)")
    right.set_ylabel("parameters N")
    right.legend(fontsize=8)
    return _finish(fig, (left, right), path)


def plot_schedule(lrs: list[float], warmup_steps: int, title: str, path: str | Path) -> Path:
    """The learning rate at each optimizer step 0 .. len(lrs) - 1, with the end of warmup marked."""
    fig = _figure(7, 4)
    ax = fig.subplots()
    steps = len(lrs)
    ax.plot(range(steps), lrs, color=N_COLOR, lw=1.5)
    if warmup_steps:
        ax.axvline(warmup_steps - 1, color="gray", ls=":", lw=1, label=f"warmup ends: peak at step {warmup_steps - 1}")
        ax.legend(loc="upper right")
    ax.set_xlim(0, max(steps - 1, 1))
    ax.set_ylim(0, max(max(lrs), 1e-12) * 1.18)  # headroom for the legend above the peak
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    return _finish(fig, [ax], path)
