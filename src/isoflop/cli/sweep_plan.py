"""`isoflop sweep plan SPEC.toml [--out DIR] [--json]`: the runs of a sweep spec, and both modes' FLOP bills.

With --out, DIR becomes the sweep folder (the spec as written and the plan, sweep/layout.py); planning the same
spec into it again changes nothing, and a folder holding another spec is refused. Without --out the plan is only printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from isoflop.cli.common import print_json


def add_plan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (docs/sweeps.md, \"The spec\")")
    parser.add_argument("--out", metavar="DIR",
                        help="write the sweep folder here (absent or empty; or holding this same spec: no change)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the plan) instead of the table")


def plan(args: argparse.Namespace) -> int:
    from isoflop.sweep.grid import design
    from isoflop.sweep.layout import SweepDir
    from isoflop.sweep.spec import load_spec

    path = Path(args.spec)
    spec = load_spec(path)
    sweep_plan = design(spec, path.parent)
    written = SweepDir(args.out).place(path.read_text(), sweep_plan) if args.out else False
    bills = sweep_plan.bills
    share = bills["fork"] / bills["grid"] if len(bills) == 2 else None
    if args.json:
        print_json({**sweep_plan.to_dict(), "fork_share": share, "out": args.out, "written": written})
        return 0
    print(_table(sweep_plan))
    print()
    throughput = spec.throughput
    shown = [f"{m} {_num(bills[m])} ({_time(bills[m] / throughput)})" if m in bills else f"{m}: cannot be planned"
             for m in ("grid", "fork")]
    print(f"FLOP bills  {'   '.join(shown)}   fork/grid {'-' if share is None else f'{share:.2f}'}   "
          f"(est. at {throughput:.3g} FLOP/s; this plan is {sweep_plan.mode} mode)")
    if args.out:
        print(f"{'wrote' if written else 'unchanged:'} {args.out}")
    return 0


def _table(sweep_plan) -> str:  # noqa: ANN001 - a SweepPlan
    head = ("key", "role", "C", "N", "N counted", "d/L/H", "D tokens", "steps", "batch", "lr", "FLOPs", "6ND",
            "est.")
    rows = [head]
    for r in sweep_plan.runs:
        s = r.shape
        rows.append((r.key, r.role, _num(r.budget), _count(r.target_params), f"{r.params['total']:,}",
                     f"{s['d_model']}/{s['n_layers']}/{s['n_heads']}", _count(r.tokens), str(r.steps),
                     str(r.batch_size), f"{r.lr:.3g}", _num(r.flops), _num(r.flops_6nd), _time(r.est_time_s)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    left = {0, 1}
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                  strict=True)))
                     for row in rows)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}".replace("e+", "e")


def _count(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
