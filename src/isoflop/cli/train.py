"""`isoflop train` and `isoflop info`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from isoflop.cli.common import add_config_args, load_experiment, load_run_experiment, print_json
from isoflop.config import ConfigError

if TYPE_CHECKING:
    from isoflop.train.spec import ExperimentConfig


def add_train_args(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, required=False)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run directory to create (or resume); `isoflop train DIR --resume` resumes DIR")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in DIR from its newest checkpoint; with --set train.horizon.* also a "
                             "finished run, to the new horizon")
    parser.add_argument("--init-from", default=None, metavar="RUN[@STEP]",
                        help="start the new run from the weights of RUN's checkpoint STEP (default: its newest)")
    parser.add_argument("--init-optimizer", action="store_true", help="with --init-from: also its optimizer state")
    parser.add_argument("--init-data", action="store_true",
                        help="with --init-from: also continue its data position, step count and RNG from STEP")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")


def train(args: argparse.Namespace) -> int:
    from isoflop.cli import EXIT_FAILED, EXIT_PREEMPTED
    from isoflop.rundir import RunDir
    from isoflop.train.run import InitFrom, run_training
    from isoflop.train.run_plan import describe, resolve_plan
    from isoflop.train.step import NonFiniteLoss, Preempted

    target, out = args.target, args.out
    if target is not None and out is None and RunDir(target).is_run():
        target, out = None, target  # `isoflop train DIR --resume`: DIR is the run (written by `upcycle`, or killed)
    if out is None:
        raise ConfigError("--out", "name the run directory to write")
    if (args.init_optimizer or args.init_data) and args.init_from is None:
        raise ConfigError("--init-optimizer" if args.init_optimizer else "--init-data", "needs --init-from RUN[@STEP]")
    init_from = (InitFrom.parse(args.init_from, optimizer=args.init_optimizer, data=args.init_data)
                 if args.init_from is not None else None)
    if target is None:
        if not args.resume:
            raise ConfigError("RECIPE|FILE", "name a recipe or config file (or pass --resume with --out DIR)")
        cfg = load_run_experiment(RunDir(out).require_run(), args.overrides)
    else:
        cfg = load_experiment(target, args.overrides)
    if args.dry_run:
        import os

        plan = resolve_plan(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        print(describe(plan))
        return 0
    try:
        record = run_training(cfg, out, resume=args.resume, init_from=init_from)
    except NonFiniteLoss as e:
        print(f"isoflop train: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Preempted as e:
        print(f"isoflop train: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    print(f"val loss {record.val_loss:.4f} | {record.val_bpb:.4f} bits/byte | "
          f"{record.steps} steps, {record.D_tokens:,} tokens in {record.wall_time_s:.0f} s -> {out}")
    return 0


def add_info_args(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--world-size", type=int, default=1, help="plan for this many data-parallel ranks")
    parser.add_argument("--plot-schedule", metavar="FILE.png", default=None,
                        help="also write a PNG of the learning rate over the run's optimizer steps")


def info(args: argparse.Namespace) -> int:
    from isoflop.nn.counting import flops_per_token, param_groups
    from isoflop.train.run_plan import describe, resolve_plan

    cfg = load_experiment(args.target, args.overrides)
    if args.world_size < 1:
        raise ConfigError("--world-size", f"must be at least 1, got {args.world_size}")
    plan = resolve_plan(cfg, args.world_size)
    if args.plot_schedule is not None:
        plot_schedule(cfg, plan.steps, args.plot_schedule)
    model = cfg.resolved_model
    out = {
        "params": param_groups(model).to_dict(),
        "flops_per_token": flops_per_token(model, cfg.data.seq_len).to_dict(),
        "plan": plan.to_dict(),
        "config": cfg.to_dict(),
    }
    if args.json:
        print_json(out)
        return 0
    p = out["params"]
    width = max(len(k) for k in p)
    print("parameters")
    for key, value in p.items():
        print(f"  {key:<{width}}  {value:>14,}")
    f = out["flops_per_token"]
    print(f"FLOPs per token at seq_len {f['seq_len']}: forward {f['forward']:,}, training {f['training']:,}")
    print(describe(plan))
    return 0


def plot_schedule(cfg: ExperimentConfig, steps: int, path: str) -> Path:
    """A PNG of lr(step) = optim.lr * schedule multiplier for steps 0 .. steps-1."""
    from isoflop.science.plots import plot_schedule as draw

    out = Path(path)
    if not out.parent.is_dir():
        raise ConfigError("--plot-schedule", f"directory {str(out.parent)!r} does not exist")
    lrs = [cfg.optim.lr * cfg.schedule.multiplier(s, steps) for s in range(steps)]
    title = f"{cfg.schedule.kind} schedule, {cfg.optim.kind} peak lr {cfg.optim.lr:g}, {steps:,} steps"
    try:
        return draw(lrs, cfg.schedule.warmup_length(steps), title, out)
    except ImportError as e:
        raise ConfigError("--plot-schedule", str(e)) from None
    except OSError as e:
        raise ConfigError("--plot-schedule", f"cannot write {str(out)!r}: {e.strerror or e}") from None
