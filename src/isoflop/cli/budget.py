"""`isoflop plan`: how to spend a compute budget, from a scaling law (a preset, parameters, or a fit)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isoflop.cli.common import print_json
from isoflop.config import ConfigError

if TYPE_CHECKING:
    from isoflop.science.laws import Law
    from isoflop.science.uncertainty import Uncertainty

DEFAULT_LAW = "epoch"
PLOT_DECADES = 3.0
"""The plot spans the budget ÷ and × 10^3."""


def add_plan_args(parser: argparse.ArgumentParser) -> None:
    from isoflop.science.bootstrap import DEFAULT_LEVEL
    from isoflop.science.laws import PRESETS

    budget = parser.add_argument_group("budget (give --flops, or all of --gpu-hours, --mfu and --peak-flops; "
                                       "--loss with --inference-tokens alone needs none)")
    budget.add_argument("--flops", type=float, metavar="C", help="training compute in FLOPs, e.g. 1e23")
    budget.add_argument("--gpu-hours", type=float, metavar="H", help="GPU-hours; C = H * 3600 * P * MFU")
    budget.add_argument("--mfu", type=float, metavar="M", help="model-FLOPs utilisation in (0, 1], e.g. 0.4")
    budget.add_argument("--peak-flops", type=float, metavar="P",
                        help="peak FLOP/s of one GPU at the training precision, e.g. 989e12 (H100 SXM bf16 dense)")
    law = parser.add_argument_group("law")
    law.add_argument("--law", metavar="NAME|key=value,...",
                     help=f"a preset ({', '.join(PRESETS.names())}), parameters "
                          f"E=..,A=..,B=..,alpha=..,beta=.., or a preset with overrides (epoch,E=1.8). Default "
                          f"{DEFAULT_LAW}: Epoch AI's 2024 re-fit of Hoffmann et al.'s own data corrects the "
                          f"original optimizer's early stop and rounding, and agrees with Hoffmann's approaches 1 "
                          f"and 2 (about 20 tokens per parameter), which Hoffmann's published fit does not")
    law.add_argument("--fit", metavar="FIT.json",
                     help="the law from `isoflop fit --json` output instead of --law; bootstrap samples (or "
                          "standard errors) in it give intervals")
    law.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                     help=f"interval level for --fit with bootstrap (default {DEFAULT_LEVEL:g}: 10th-90th "
                          "percentiles, as Epoch AI and Hoffmann report)")
    extra = parser.add_argument_group("further questions")
    extra.add_argument("--inference-tokens", type=float, metavar="T",
                       help="tokens the model will serve in its lifetime; with --loss: the model of least "
                            "training + inference FLOPs reaching that loss (Sardana et al. 2024; needs no budget)")
    extra.add_argument("--loss", type=float, metavar="L", help="target loss for --inference-tokens (nats/token)")
    extra.add_argument("--unique-tokens", type=float, metavar="U",
                       help="unique tokens available: the best split when data must repeat (Muennighoff et al. "
                            "2023; a non-Muennighoff law borrows their R_D*, R_N*)")
    extra.add_argument("--overhead", nargs="?", const="default", metavar="K,K,...",
                       help="the smaller-and-longer table: for N = k_N * N_opt, the tokens for the same loss "
                            "and the extra compute (de Vries 2023); optional comma-separated k_N values")
    extra.add_argument("--shape", action="store_true",
                       help="a model shape (d_model, n_layers, n_heads) whose total parameters are within 5%% "
                            "of N_opt, counted by the engine")
    extra.add_argument("--vocab-size", type=int, default=32000, help="vocabulary for --shape (default 32000)")
    extra.add_argument("--tie-embeddings", action="store_true", help="--shape with tied input/output embeddings")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--plot", metavar="FILE.png", help="draw N_opt, D_opt and D/N against compute around the budget")


def _finite(key: str, value: float | None, *, positive: bool = True) -> None:
    if value is not None and not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ConfigError(key, f"must be a {'positive' if positive else 'non-negative'} finite number, got {value}")


def _budget(args: argparse.Namespace) -> tuple[float | None, dict[str, float] | None]:
    """The training budget C in FLOPs (None when none is given) and, from GPU-hours, what it was made of."""
    from isoflop.science.compute_optimal import flops_from_gpu_hours

    trio = {"--gpu-hours": args.gpu_hours, "--mfu": args.mfu, "--peak-flops": args.peak_flops}
    given = [k for k, v in trio.items() if v is not None]
    if args.flops is not None:
        if given:
            raise ConfigError("--flops", f"give --flops or --gpu-hours/--mfu/--peak-flops, not both ({given[0]})")
        _finite("--flops", args.flops)
        return args.flops, None
    if not given:
        return None, None
    missing = [k for k in trio if k not in given]
    if missing:
        raise ConfigError(missing[0], f"is needed with {', '.join(given)} (C = H * 3600 * P * MFU)")
    _finite("--gpu-hours", args.gpu_hours)
    _finite("--peak-flops", args.peak_flops)
    if not (math.isfinite(args.mfu) and 0 < args.mfu <= 1):
        raise ConfigError("--mfu", f"must be in (0, 1], got {args.mfu}")
    C = flops_from_gpu_hours(args.gpu_hours, args.mfu, args.peak_flops)
    return C, {"gpu_hours": args.gpu_hours, "mfu": args.mfu, "peak_flops": args.peak_flops}


def _need_budget(args: argparse.Namespace) -> None:
    """Without a budget only the inference-aware question can be answered: name the first option that needs one."""
    needs = [k for k, v in (("--unique-tokens", args.unique_tokens), ("--overhead", args.overhead),
                            ("--shape", args.shape or None), ("--plot", args.plot)) if v is not None]
    if needs:
        raise ConfigError(needs[0], "needs a budget: give --flops C, or --gpu-hours H --mfu M --peak-flops P")
    if args.inference_tokens is None:
        raise ConfigError("--flops", "give a budget: --flops C, or --gpu-hours H --mfu M --peak-flops P "
                                     "(or ask --loss L --inference-tokens T, which needs none)")


def _law(args: argparse.Namespace) -> tuple[Law, str, Uncertainty | None]:
    from isoflop.science.laws import parse_law
    from isoflop.science.uncertainty import law_from_fit

    if args.fit is not None:
        if args.law is not None:
            raise ConfigError("--fit", "give --law or --fit, not both")
        try:
            data = json.loads(Path(args.fit).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(args.fit, f"cannot read the fit: {e}") from None
        try:
            law, uncertainty = law_from_fit(data)
        except ValueError as e:
            raise ConfigError(args.fit, f"not a fit result: {e}") from None
        return law, f"fit {args.fit}", uncertainty
    text = args.law if args.law is not None else DEFAULT_LAW
    try:
        return parse_law(text), text, None
    except ValueError as e:
        raise ConfigError("--law", str(e)) from None


def _k_values(text: str) -> list[float] | None:
    if text == "default":
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("--overhead", f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError("--overhead", f"k_N values must be positive numbers, got {text!r}")
    return values


def _check(args: argparse.Namespace) -> None:
    """The options that need no law, checked before any work."""
    if (args.inference_tokens is None) != (args.loss is None):
        missing, given = ("--loss", "--inference-tokens") if args.loss is None else ("--inference-tokens", "--loss")
        raise ConfigError(missing, f"is needed with {given} (the inference-aware plan needs both)")
    _finite("--inference-tokens", args.inference_tokens, positive=False)
    _finite("--loss", args.loss)
    _finite("--unique-tokens", args.unique_tokens)
    if not 0 < args.level < 1:
        raise ConfigError("--level", f"must be in (0, 1), got {args.level}")
    if args.vocab_size < 1:
        raise ConfigError("--vocab-size", f"must be positive, got {args.vocab_size}")
    if args.plot is not None and not Path(args.plot).resolve().parent.is_dir():
        raise ConfigError(args.plot, "the folder for the plot does not exist")


def plan(args: argparse.Namespace) -> int:
    from isoflop.science.compute_optimal import compute_optimal, describe_law
    from isoflop.science.plan_text import render_plan

    C, budget = _budget(args)
    _check(args)
    if C is None:
        _need_budget(args)
    k_values = _k_values(args.overhead) if args.overhead is not None else None
    law, name, uncertainty = _law(args)
    asked = [k for k, v in (("--inference-tokens", args.inference_tokens), ("--unique-tokens", args.unique_tokens),
                            ("--overhead", args.overhead)) if v is not None]
    if asked and law.chinchilla is None:
        raise ConfigError("--law", f"{name} is not of Chinchilla form E + A/N^alpha + B/D^beta, which "
                                   f"{', '.join(asked)} needs")
    out: dict[str, Any] = {}
    if C is not None:
        out.update(compute_optimal(law, C).to_dict())
    out["law"] = describe_law(law, name)
    if budget is not None:
        out["budget"] = budget
    if C is not None:
        _budget_sections(args, out, law, name, C, uncertainty, k_values)
    elif args.inference_tokens is not None:
        out["inference_aware"] = _inference(args, law)
    if args.json:
        print_json(out)
    else:
        print(render_plan(out))
    return 0


def _inference(args: argparse.Namespace, law: Law) -> dict[str, Any]:
    from isoflop.science.inference_plan import inference_aware

    return _section("--loss", lambda: inference_aware(law, args.loss, args.inference_tokens))


def _budget_sections(args: argparse.Namespace, out: dict[str, Any], law: Law, name: str, C: float,
                     uncertainty: Uncertainty | None, k_values: list[float] | None) -> None:
    """Every section asked about a budget C, added to `out` in the order the text table shows them."""
    from isoflop.science.data_constrained import data_constrained
    from isoflop.science.overhead import DEFAULT_K_N, overhead_table
    from isoflop.science.uncertainty import budget_intervals

    if uncertainty is not None:
        out["intervals"] = budget_intervals(law, C, uncertainty, level=args.level)
    if args.inference_tokens is not None:
        out["inference_aware"] = _inference(args, law)
    if args.unique_tokens is not None:
        out["data_constrained"] = _section("--unique-tokens", lambda: data_constrained(law, C, args.unique_tokens))
    if args.overhead is not None:
        table = _section("--overhead", lambda: overhead_table(law, C, k_values or DEFAULT_K_N))
        out["overhead"] = {**table, "rows": [row.to_dict() for row in table["rows"]]}
    if args.shape:
        from isoflop.science.shape import model_shape

        out["shape"] = _section("--shape", lambda: model_shape(out["N_opt"], vocab_size=args.vocab_size,
                                                               tie_embeddings=args.tie_embeddings))
    if args.plot is not None:
        out["plot"] = _plot(args.plot, law, name, C, out, uncertainty, args.level)


def _section(key: str, compute: Any) -> Any:
    try:
        result = compute()
    except ValueError as e:
        head, sep, rest = str(e).partition(": ")  # the library names its own argument: drop it for the option's
        raise ConfigError(key, rest if sep and head.replace("_", "-") == key.lstrip("-") else str(e)) from None
    return result if isinstance(result, dict) else result.to_dict()


def _plot(path: str, law: Law, name: str, C: float, out: dict[str, Any], uncertainty: Uncertainty | None,
          level: float) -> str:
    import numpy as np

    from isoflop.science.plots import plot_allocation
    from isoflop.science.uncertainty import allocation_curve

    flops = C * np.logspace(-PLOT_DECADES, PLOT_DECADES, 61)
    curve = allocation_curve(law, flops, uncertainty, level=level)
    law_info = out["law"]
    if "alpha" in law_info:
        title = (f"law: {name} (E={law_info['E']:.4g}, A={law_info['A']:.4g}, B={law_info['B']:.4g}, "
                 f"α={law_info['alpha']:.4g}, β={law_info['beta']:.4g}; a={law_info['a']:.3f})")
    else:
        title = f"law: {name} (N: non-embedding parameters)"
    try:
        plot_allocation(path, curve, out, title)
    except ImportError as e:
        raise ConfigError("--plot", str(e)) from None
    except (OSError, ValueError) as e:
        raise ConfigError(path, f"cannot write the plot: {e}") from None
    return path
