"""`isoflop sweep fit|report|predict SWEEP`: the scaling law of a sweep's own runs, its report, and the rung
that tests it. The work is in isoflop.sweep.fit, .report and .predict; this module parses and prints."""

from __future__ import annotations

import argparse
import sys

from isoflop.cli.common import print_json
from isoflop.config import ConfigError


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    from isoflop.science.bootstrap import DEFAULT_LEVEL
    from isoflop.sweep.fit import DEFAULT_BOOTSTRAP

    parser.add_argument("sweep", metavar="SWEEP", help="the sweep folder (made by `isoflop sweep plan --out`)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                        help=f"resamples per fit for the intervals (default {DEFAULT_BOOTSTRAP}; 0: none)")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                        help=f"interval coverage (default {DEFAULT_LEVEL:g}: 10th-90th percentiles, as Hoffmann's "
                             "Table 2 and Epoch AI report)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")


def _sweep(path: str):
    from isoflop.sweep.layout import SweepDir

    return SweepDir(path).require_sweep()


def add_fit_args(parser: argparse.ArgumentParser) -> None:
    _add_fit_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (what SWEEP/fit.json holds)")


def fit(args: argparse.Namespace) -> int:
    from isoflop.sweep.fit import sweep_fit
    from isoflop.sweep.report import fit_table

    out = sweep_fit(_sweep(args.sweep), bootstrap=args.bootstrap, level=args.level, seed=args.seed)
    if args.json:
        print_json(out)
    else:
        print(fit_table(out))
    return 0


def add_report_args(parser: argparse.ArgumentParser) -> None:
    _add_fit_options(parser)


def report(args: argparse.Namespace) -> int:
    from isoflop.sweep.report import sweep_report

    paths = sweep_report(_sweep(args.sweep), bootstrap=args.bootstrap, level=args.level, seed=args.seed)
    for kind, path in paths.items():
        print(f"{kind:<10} {path}")
    return 0


def add_predict_args(parser: argparse.ArgumentParser) -> None:
    _add_fit_options(parser)
    parser.add_argument("--flops", type=float, required=True, metavar="C",
                        help="the rung's training FLOPs (counted), beyond every budget of the sweep")
    parser.add_argument("--approach", type=int, choices=[1, 2, 3], default=3,
                        help="the approach whose N_opt(C) sizes the rung (default 3); the loss is always "
                             "predicted by approach 3's law")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true",
                      help="print the rung's plan and the prediction; write and train nothing")
    what.add_argument("--no-train", action="store_true",
                      help="add the rung to the plan and store the prediction, but leave the training to "
                           "`isoflop sweep run` (any executor, --jobs); `sweep fit`/`report` then measure it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def predict(args: argparse.Namespace) -> int:
    from isoflop.sweep.predict import sweep_predict

    if args.flops is None:
        raise ConfigError("--flops", "give the rung's training FLOPs")
    out = sweep_predict(_sweep(args.sweep), flops=args.flops, approach=args.approach, bootstrap=args.bootstrap,
                        level=args.level, seed=args.seed, dry_run=args.dry_run, train=not args.no_train,
                        stream=sys.stderr if args.json else None)  # --json: stdout holds the one object
    if args.json:
        print_json(out)
        return 0
    print(_predict_text(out))
    return 0


def _predict_text(out: dict) -> str:
    from isoflop.sweep.plots import sci

    p, rung = out["prediction"], out["rung"]
    shape = rung.get("shape", {})
    dims = "/".join(str(shape[k]) for k in ("d_model", "n_layers", "n_heads") if k in shape)
    lines = [f"rung {p['key']} at C' = {sci(p['flops'])} FLOPs"
             + (" (dry run: nothing written or trained)" if out["dry_run"] else ""),
             f"  N_opt = {sci(p['N_opt'])}, D_opt = {sci(p['D_opt'])} from approach {p['approach']} "
             f"(N_opt ∝ C^{p['a']:.3f}; fitted on {p['fit_runs']} runs)",
             f"  planned: N = {sci(p['N_planned'])} ({dims}), D = {sci(p['D_planned'])} tokens, "
             f"{rung.get('steps')} steps, lr {rung.get('lr', 0):.3g}, FLOPs {sci(p['flops_planned'])}",
             f"  predicted loss (approach 3 law): {p['predicted_loss']:.4f} at the planned N, D; "
             f"{p['predicted_loss_at_optimum']:.4f} at the optimum"]
    if p.get("measured_loss") is not None:
        lines.append(f"  measured loss {p['measured_loss']:.4f}: |predicted - measured| / measured = "
                     f"{100 * p['rel_error']:.2f} %")
    elif not out["dry_run"]:
        lines.append(f"  not measured yet ({p['status']}: {p.get('reason', '')}); `isoflop sweep run` trains it")
    return "\n".join(lines)
