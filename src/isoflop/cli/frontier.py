"""`isoflop frontier`: the loss-vs-cost Pareto frontier of several runs, who leads where, and the crossovers."""

from __future__ import annotations

import argparse
from pathlib import Path

from isoflop.cli.common import print_json
from isoflop.config import ConfigError

AXES = ("flops", "tokens", "elapsed_s", "gpu_hours", "step")


def add_frontier_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="RUN_DIR|TABLE",
                        help="run directories (or folders of them), or .csv/.tsv/.jsonl tables of (cost, loss) "
                             "per model")
    parser.add_argument("--axis", choices=AXES, default="flops",
                        help="cost axis for run directories (tables use their `cost` column)")
    parser.add_argument("--which", choices=("train", "val"), default="train",
                        help="the training-loss curve, or the evaluations")
    parser.add_argument("--columns", default=None, metavar="MAP",
                        help='table columns, e.g. "cost=Hours,L=Loss,model=Model,N=Params"')
    parser.add_argument("--smooth", type=int, default=1,
                        help="average this many neighbouring points before the running minimum")
    parser.add_argument("--no-hold", action="store_true",
                        help="a run is absent after its last point (default: it stays at its best loss)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="draw the curves and the frontier")


def frontier(args: argparse.Namespace) -> int:
    from isoflop.science.errors import ScienceError
    from isoflop.science.frontier import pareto_frontier
    from isoflop.science.records import RecordsError, load_cost_curves, load_curves

    if args.smooth < 1:
        raise ConfigError("--smooth", f"must be at least 1, got {args.smooth}")
    tables = [p for p in args.inputs if Path(p).suffix in (".csv", ".tsv", ".jsonl")]
    try:
        if tables and len(tables) != len(args.inputs):
            raise ConfigError("inputs", "give either run directories or tables, not both")
        if tables:
            curves, axis = load_cost_curves(tables, columns=args.columns), "cost"
        else:
            curves, axis = load_curves(args.inputs, which=args.which), args.axis
        result = pareto_frontier(curves, axis=axis, smooth=args.smooth, hold=not args.no_hold)
    except (RecordsError, ScienceError) as e:
        raise ConfigError("inputs", str(e)) from None
    if args.plot:
        from isoflop.science.plots import plot_frontier

        plot_frontier(curves, result, args.plot)
    if args.json:
        print_json({"models": [c.name for c in curves], **result.to_dict()})
        return 0
    print(f"frontier over {len(curves)} models on the {axis} axis")
    for s in result.segments:
        print(f"  {s.cost_lo:10.4g} .. {s.cost_hi:<10.4g} {s.leader}")
    for c in result.crossovers:
        who = {True: "larger wins", False: "smaller wins", None: ""}[c.larger_wins]
        print(f"  crossover at {c.cost:.4g} ({c.kind}): {c.before} -> {c.after}  loss {c.loss:.4f}  {who}")
    return 0
