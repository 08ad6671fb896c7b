"""A study's report on disk: `report.md` (the claim, the setting, a markdown table, what it shows),
`results.json` (everything, machine-readable) and a PNG plot.

A study hands over plain data (it may not import `science`), a dict of this shape:

    {"study": name, "title": str, "claim": str, "setting": str, "findings": [str, ...],
     "columns": [{"key": k, "label": str, "format": ".4f" | "d" | "s" | ...}, ...],
     "rows": [{k: value, ...}, ...],
     "plot": {"title": str, "panels": [panel, ...]},
     "data": {...}}                      # optional extra data, copied into results.json

    panel = {"title": str, "xlabel": str, "ylabel": str, "xscale": "linear" | "log2" | "log",
             "yscale": "linear" | "log", "series": [{"label": str, "x": [...], "y": [...],
             "style": "-" | "--" | ":" | "o-" ..., "color": optional matplotlib colour}],
             "hlines": [{"y": float, "label": str}]}

Rendering uses matplotlib's Agg canvas on a bare `Figure` (no pyplot, no global state), imported only when
a plot is drawn.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.rundir import atomic

REQUIRED = ("study", "title", "claim", "setting", "columns", "rows", "plot")
#: matplotlib's "tab20" colours, dark shades first, then the light ones.
_TAB20 = [f"C{i}" for i in range(10)] + ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                                         "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]


def validate(report: dict[str, Any]) -> None:
    """Raise ValueError when `report` lacks a part, or a row lacks a column (a study's bug, not user input)."""
    missing = [k for k in REQUIRED if k not in report]
    if missing:
        raise ValueError(f"report lacks {missing}")
    keys = [c["key"] for c in report["columns"]]
    for i, row in enumerate(report["rows"]):
        absent = [k for k in keys if k not in row]
        if absent:
            raise ValueError(f"row {i} lacks columns {absent}")
    for panel in report["plot"].get("panels", []):
        for s in panel["series"]:
            if len(s["x"]) != len(s["y"]):
                raise ValueError(f"series {s['label']!r}: {len(s['x'])} x values, {len(s['y'])} y values")


def format_cell(value: Any, fmt: str = "") -> str:
    """One table cell: None and non-finite numbers read as text, numbers by `fmt`."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal bar would split the cell


def markdown_table(columns: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(_cell(c["label"]) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(_cell(format_cell(row[c["key"]], c.get("format", ""))) for c in columns) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], plot_file: str | None) -> str:
    parts = [f"# {report['title']}", "", f"**Claim.** {report['claim']}", "", f"**Setting.** {report['setting']}",
             "", markdown_table(report["columns"], report["rows"]), ""]
    findings = report.get("findings") or []
    if findings:
        parts += ["**What the table shows.**", ""] + [f"- {f}" for f in findings] + [""]
    if plot_file:
        parts += [f"![{report['plot'].get('title', report['study'])}]({plot_file})", ""]
    return "\n".join(parts)


def plot_report(plot: dict[str, Any], path: str | Path) -> Path:
    """Draw the panels of `plot` side by side into a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = plot.get("panels", [])
    fig = Figure(figsize=(6.4 * max(len(panels), 1), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, max(len(panels), 1)))
    for ax, panel in zip(axes, panels, strict=False):
        many = len(panel["series"]) > 10  # past the default cycle's 10 colours, take 20 distinct ones
        for i, s in enumerate(panel["series"]):
            x, y = np.asarray(s["x"], dtype=float), np.asarray(s["y"], dtype=float)
            color = ({"color": s["color"]} if "color" in s else
                     {"color": _TAB20[i % 20]} if many and not s.get("style", "").startswith("k") else {})
            ax.plot(x, y, s.get("style", "-"), label=s["label"], lw=1.4, ms=4, **color)
        for h in panel.get("hlines", []):
            ax.axhline(h["y"], color="gray", ls=":", lw=1.2, label=h.get("label"))
        xscale = panel.get("xscale", "linear")
        if xscale == "log2":
            ax.set_xscale("log", base=2)
        elif xscale != "linear":
            ax.set_xscale(xscale)
        if panel.get("yscale", "linear") != "linear":
            ax.set_yscale(panel["yscale"])
        if "ylim" in panel:
            ax.set_ylim(*panel["ylim"])
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=7, ncol=2 if len(panel["series"]) > 6 else 1)
    if plot.get("title"):
        fig.suptitle(plot["title"], fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write `<study>.png`, `results.json` and `report.md` into `out_dir` (each atomically, the markdown last);
    returns their paths by kind."""
    validate(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{report['study']}.png"
    tmp_png = png.with_name(f".{png.name}.tmp.png")  # matplotlib picks the format from the suffix
    plot_report(report["plot"], tmp_png)
    os.replace(tmp_png, png)
    results = {k: report[k] for k in report if k != "plot"}
    results["plot"] = report["plot"]
    atomic.write_text(out / "results.json", json.dumps(_finite(results), indent=1, default=_jsonable) + "\n")
    atomic.write_text(out / "report.md", render_markdown(report, png.name))
    return {"report": out / "report.md", "results": out / "results.json", "plot": png}


def _finite(value: Any) -> Any:
    """Non-finite floats become None (strict JSON has no NaN or Infinity)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON data: {type(value).__name__}")


