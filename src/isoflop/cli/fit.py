"""`isoflop fit`: a scaling law from runs — Chinchilla's approaches 1, 2 and 3 (Hoffmann et al. 2022)."""

from __future__ import annotations

import argparse

from isoflop.cli.common import print_json
from isoflop.config import ConfigError


def add_fit_args(parser: argparse.ArgumentParser) -> None:
    from isoflop.science.bootstrap import DEFAULT_LEVEL
    from isoflop.science.examples import EXAMPLES
    from isoflop.science.objective import LOSSES
    from isoflop.science.result import DEFAULT_BUDGETS

    parser.add_argument("data", nargs="*", metavar="DATA",
                        help="run directories (or folders of them), or .csv/.tsv/.jsonl tables of runs")
    parser.add_argument("--example", choices=EXAMPLES.names(), default=None,
                        help="fit a data set shipped with isoflop instead of DATA: chinchilla is Epoch AI's "
                             "transcription of Hoffmann et al.'s runs (Besiroglu et al. 2024), fitted with its "
                             "5 highest-loss runs dropped as Epoch did unless --drop-highest says otherwise")
    parser.add_argument("--columns", default=None, metavar="MAP",
                        help='table columns for N, D, C, L, e.g. "N=Model Size,C=Training FLOP,L=loss" '
                             "(D = C/6N when only C is given)")
    parser.add_argument("--law", choices=["chinchilla"], default="chinchilla",
                        help="the law form: L = E + A/N^alpha + B/D^beta")
    parser.add_argument("--approach", type=int, choices=[1, 2, 3], default=3,
                        help="1: envelope of training curves (run directories); 2: isoFLOP parabolas; "
                             "3: parametric fit (default)")
    parser.add_argument("--loss", choices=LOSSES, default="huber",
                        help="approach 3's objective: Huber on log residuals (Hoffmann), least absolute "
                             "deviations, or the asymmetric lower-envelope loss")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta (Hoffmann: 1e-3)")
    parser.add_argument("--drop-highest", type=int, default=None, metavar="K",
                        help="leave out the K highest-loss runs (Epoch drops 5 outliers; default 0, or the "
                             "example's own rule)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="resamples for intervals")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                        help=f"interval level of the bootstrap (default {DEFAULT_LEVEL:g}: 10th-90th "
                             "percentiles, as Hoffmann's Table 2 and Epoch AI report)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", default=",".join(f"{c:g}" for c in DEFAULT_BUDGETS), metavar="C,C,...",
                        help="compute budgets (FLOPs) at which to report D/N with its interval")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (save it for `isoflop plan --fit FILE`)")
    parser.add_argument("--plot", default=None, metavar="FILE.png")


def fit(args: argparse.Namespace) -> int:
    from isoflop.science.errors import ScienceError
    from isoflop.science.records import RecordsError

    if args.bootstrap < 0 or args.bootstrap == 1:
        raise ConfigError("--bootstrap", f"needs 0 or at least 2 resamples, got {args.bootstrap}")
    if args.drop_highest is not None and args.drop_highest < 0:
        raise ConfigError("--drop-highest", f"must be non-negative, got {args.drop_highest}")
    if not 0 < args.level < 1:
        raise ConfigError("--level", f"must be in (0, 1), got {args.level}")
    budgets = _floats(args.budgets, "--budgets")
    paths, columns, drop_highest = _data(args)
    try:
        result, records = _run(args, paths, columns, drop_highest)
    except (ScienceError, RecordsError) as e:  # bad records, or a fit that cannot run on them (too few budgets)
        raise ConfigError("DATA", str(e).splitlines()[0]) from None
    if args.plot:
        _plot(args.plot, result, records, drop_highest)
    out = result.to_dict(budgets=budgets, samples=True)
    if args.json:
        print_json(out)
    else:
        _print_human(out)
    return 0


def _data(args: argparse.Namespace) -> tuple[list[str], str | None, int]:
    """The inputs, their column mapping and the drop rule: DATA as given, or a shipped example's."""
    from isoflop.science.examples import EXAMPLES

    if args.example is None:
        if not args.data:
            raise ConfigError("DATA", "give run directories or tables of runs, or --example NAME")
        return args.data, args.columns, args.drop_highest or 0
    if args.data or args.columns:
        raise ConfigError("--example", f"give DATA{' and --columns' if args.columns else ''} or --example, not both")
    example = EXAMPLES.get(args.example, key="--example")
    if args.approach == 1:
        raise ConfigError("--example", f"{args.example} holds final losses, not training curves: approach 1 needs "
                                       "run directories")
    drop = example.drop_highest if args.drop_highest is None else args.drop_highest
    return [str(example.path())], example.columns, drop


def _run(args: argparse.Namespace, paths: list[str], columns: str | None, drop_highest: int):
    """(the ScalingFit, the records or curves it was fitted on)."""
    from isoflop.science.bootstrap import Bootstrap
    from isoflop.science.records import load_curves, load_records

    boot = Bootstrap(n=args.bootstrap, level=args.level, seed=args.seed) if args.bootstrap else None
    if args.approach == 1:
        from isoflop.science.isoflop import Approach1

        curves = load_curves(paths)
        return Approach1(bootstrap=boot).fit(curves), curves
    records = load_records(paths, columns=columns, min_points=5 if args.approach == 3 else 3)
    if args.approach == 2:
        from isoflop.science.isoflop import Approach2

        return Approach2(bootstrap=boot).fit(records.N, records.C, records.L), records
    from isoflop.science.fit import Approach3

    if len(records.L) - drop_highest < 5:
        raise ConfigError("DATA", f"approach 3 fits 5 parameters: {len(records.L) - drop_highest} points "
                                  "left after --drop-highest are too few")
    estimator = Approach3(loss=args.loss, delta=args.delta, drop_highest=drop_highest, bootstrap=boot)
    return estimator.fit(records.N, records.D, records.L), records


def _plot(path: str, result, data, drop_highest: int) -> None:
    from isoflop.science import plots

    if result.approach == 3:
        plots.plot_fit(data, result, drop_highest, path)
    elif result.approach == 2:
        plots.plot_isoflop(data, result, path)
    else:
        plots.plot_envelope(data, result, path)


def _print_human(r: dict) -> None:
    iv = r.get("intervals") or {}
    se, ci = iv.get("se", {}), iv.get("ci", {})

    def show(key: str, fmt: str) -> str:
        text = format(r[key], fmt)
        if key in se:
            text += f" ± {se[key]:{fmt}}  [{ci[key][0]:{fmt}}, {ci[key][1]:{fmt}}]"
        return text

    if r["approach"] == 3:
        status = "converged" if r["success"] else f"NOT CONVERGED: {r['message']}"
        print(f"approach 3, {r['loss']} loss, {r['n_points']} points: {status}")
        print(f"  L = E + A/N^alpha + B/D^beta   (objective {r['objective']:.6g}, condition {r['condition']:.3g})")
        for key, fmt in (("E", ".4f"), ("A", ".1f"), ("B", ".1f"), ("alpha", ".4f"), ("beta", ".4f"),
                         ("a", ".4f"), ("b", ".4f")):
            print(f"  {key:<6} {show(key, fmt)}")
        if iv:
            print(f"  (± standard error  [{iv['level']:.0%} interval], {iv['n']} bootstrap resamples)")
        boot = (r.get("bootstrap") or {}).get("tokens_per_param", {})
        for c, ratio in r["tokens_per_param"].items():
            band = f"  [{boot[c]['ci'][0]:.1f}, {boot[c]['ci'][1]:.1f}]" if c in boot else ""
            print(f"  D/N at C = {c}: {ratio:.1f}{band}")
        return
    rng = f"  a in [{ci['a'][0]:.3f}, {ci['a'][1]:.3f}] ({iv['level']:.0%})" if "a" in ci else ""
    print(f"approach {r['approach']}: N_opt ∝ C^{r['a']:.4f}, D_opt ∝ C^{r['b']:.4f}{rng}")
    if not r["success"]:
        print(f"  NOT RELIABLE: {r['message']}")
    for p in r.get("profiles", []):
        print(f"  C = {p['C']:.3g}: N* = {p['N_opt']:.3g}, D* = {p['D_opt']:.3g}, L* = {p['L_opt']:.4f}")


def _floats(text: str, key: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(key, f"expected numbers separated by commas, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise ConfigError(key, f"expected positive numbers, got {text!r}")
    return values
