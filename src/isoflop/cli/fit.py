"""`isoflop fit`: a scaling law from runs — Chinchilla's approaches 1, 2 and 3 (Hoffmann et al. 2022)."""

from __future__ import annotations

import argparse

from isoflop.cli.common import print_json
from isoflop.config import ConfigError


def add_fit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", metavar="DATA",
                        help="run directories (or folders of them), or .csv/.tsv/.jsonl tables of runs")
    parser.add_argument("--columns", default=None, metavar="MAP",
                        help='table columns for N, D, C, L, e.g. "N=Model Size,C=Training FLOP,L=loss" '
                             "(D = C/6N when only C is given)")
    parser.add_argument("--law", choices=["chinchilla"], default="chinchilla",
                        help="the law form: L = E + A/N^alpha + B/D^beta")
    parser.add_argument("--approach", type=int, choices=[1, 2, 3], default=3,
                        help="1: envelope of training curves (run directories); 2: isoFLOP parabolas; "
                             "3: parametric fit (default)")
    parser.add_argument("--loss", choices=["huber", "lad", "asymmetric"], default="huber",
                        help="approach 3's objective: Huber on log residuals (Hoffmann), least absolute "
                             "deviations, or the asymmetric lower-envelope loss")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta (Hoffmann: 1e-3)")
    parser.add_argument("--drop-highest", type=int, default=0, metavar="K",
                        help="leave out the K highest-loss runs (Epoch drops 5 outliers)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="resamples for intervals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", default="1e21,5.88e23,1e25", metavar="C,C,...",
                        help="compute budgets (FLOPs) at which to report D/N with its interval")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (save it for `isoflop plan --fit FILE`)")
    parser.add_argument("--plot", default=None, metavar="FILE.png")


def fit(args: argparse.Namespace) -> int:
    from isoflop.science.records import RecordsError, load_curves, load_records

    if args.bootstrap < 0 or args.bootstrap == 1:
        raise ConfigError("--bootstrap", f"needs 0 or at least 2 resamples, got {args.bootstrap}")
    if args.drop_highest < 0:
        raise ConfigError("--drop-highest", f"must be non-negative, got {args.drop_highest}")
    budgets = _floats(args.budgets, "--budgets")
    try:
        if args.approach == 1:
            curves = load_curves(args.data)
            result = _approach1(curves, args)
        else:
            records = load_records(args.data, columns=args.columns, min_points=5 if args.approach == 3 else 3)
            result = _approach3(records, args, budgets) if args.approach == 3 else _approach2(records, args)
    except RecordsError as e:
        raise ConfigError("DATA", str(e)) from None
    except ValueError as e:  # a fit that cannot run on this data (too few budgets, non-finite objective, ...)
        raise ConfigError("DATA", str(e).splitlines()[0]) from None
    if args.json:
        print_json(result)
    else:
        _print_human(result)
    return 0


def _approach3(records, args, budgets) -> dict:
    from isoflop.science.bootstrap import bootstrap
    from isoflop.science.fit import fit_chinchilla

    if len(records.L) - args.drop_highest < 5:
        raise ConfigError("DATA", f"approach 3 fits 5 parameters: {len(records.L) - args.drop_highest} points "
                                  "left after --drop-highest are too few")
    result = fit_chinchilla(records.N, records.D, records.L, loss=args.loss, delta=args.delta,
                            drop_highest=args.drop_highest)
    out = {"approach": 3, "law": "chinchilla", **result.to_dict(),
           "tokens_per_param": {f"{c:g}": float(result.law.tokens_per_param(c)) for c in budgets}}
    if args.bootstrap:
        boot = bootstrap(records.N, records.D, records.L, n=args.bootstrap, seed=args.seed, budgets=budgets,
                         fit=result, loss=args.loss, delta=args.delta, drop_highest=args.drop_highest)
        out.update(se=boot.se, ci={k: list(v) for k, v in boot.ci.items()},
                   bootstrap=boot.to_dict(samples=True))
    if args.plot:
        from isoflop.science.plots import plot_fit

        plot_fit(records, result, args.drop_highest, args.plot)
    return out


def _approach2(records, args) -> dict:
    from isoflop.science.isoflop import approach2

    result = approach2(records.N, records.C, records.L, bootstrap=args.bootstrap, seed=args.seed)
    if args.plot:
        from isoflop.science.plots import plot_isoflop

        plot_isoflop(records, result, args.plot)
    return {"approach": 2, "n_points": len(records.L), **result.to_dict()}


def _approach1(curves, args) -> dict:
    from isoflop.science.isoflop import approach1

    result = approach1(curves, bootstrap=args.bootstrap, seed=args.seed)
    if args.plot:
        from isoflop.science.plots import plot_envelope

        plot_envelope(curves, result, args.plot)
    return {"approach": 1, "n_curves": len(curves), **result.to_dict()}


def _print_human(r: dict) -> None:
    se, ci = r.get("se", {}), r.get("ci", {})

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
        boot = r.get("bootstrap", {}).get("tokens_per_param", {})
        for c, ratio in r["tokens_per_param"].items():
            band = f"  [{boot[c]['ci'][0]:.1f}, {boot[c]['ci'][1]:.1f}]" if c in boot else ""
            print(f"  D/N at C = {c}: {ratio:.1f}{band}")
        return
    rng = f"  a in [{r['a_range'][0]:.3f}, {r['a_range'][1]:.3f}]" if r.get("a_range") else ""
    print(f"approach {r['approach']}: N_opt ∝ C^{r['a']:.4f}, D_opt ∝ C^{r['b']:.4f}{rng}")
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
