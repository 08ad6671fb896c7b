"""`isoflop sweep run`, `sweep run-one` and `sweep status`: train a sweep's runs here or on Slurm, and see where
they stand. The work is sweep/local.py, sweep/slurm.py, sweep/run_one.py and sweep/status.py.

Exit codes: `run` 0 when every selected run is done, 1 when any failed (or is blocked or corrupt), 2 bad
input (a second `sweep run` on the same folder included), 3 when runs were stopped with a checkpoint (the
next `sweep run` resumes them). `run-one` 0 done, 1 failed, 2 bad input, 3 preempted (checkpointed).
`run-server` is the fork server `sweep run` starts its runs from (sweep/spawn.py), not a command for users.
"""

from __future__ import annotations

import argparse
import sys

from isoflop.cli import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED
from isoflop.cli.common import print_json
from isoflop.config import ConfigError


def _say(line: str) -> None:
    print(line, flush=True)


def add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP", help="the sweep folder (made by `isoflop sweep plan`)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="train here (local, the default) or submit one Slurm job per run (slurm)")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="local: runs at once; each gets max(1, cores // K) threads (default 1)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="rerun the runs that failed before (their failure file is cleared; they resume)")
    parser.add_argument("--only", nargs="+", metavar="KEY", default=None, help="only these runs of the plan")
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                        help="seconds between progress lines for the runs in flight (default 30)")
    slurm = parser.add_argument_group("slurm (--executor slurm)")
    slurm.add_argument("--partition", default=None, metavar="P")
    slurm.add_argument("--gpus-per-node", type=int, default=0, metavar="G",
                       help="GPUs per node, one task (DDP rank) each (default 0: a CPU job)")
    slurm.add_argument("--nodes", type=int, default=1, metavar="N")
    slurm.add_argument("--time", type=int, default=60, metavar="MIN",
                       help="time limit per job in minutes; a run needing longer checkpoints and requeues")
    slurm.add_argument("--cpus-per-task", type=int, default=None, metavar="C")
    slurm.add_argument("--mem-gb", type=float, default=None, metavar="GB")
    slurm.add_argument("--no-wait", action="store_true",
                       help="return once the jobs are submitted (`isoflop sweep status` follows them)")


def run(args: argparse.Namespace) -> int:
    from isoflop.sweep.layout import SweepDir

    sweep = SweepDir(args.sweep).require_sweep()
    if args.executor == "local":
        from isoflop.sweep.local import run_local

        if args.no_wait:
            raise ConfigError("--no-wait", "only with --executor slurm")
        summary = run_local(sweep, jobs=args.jobs, retry_failed=args.retry_failed, only=args.only, say=_say,
                            progress_every_s=args.progress_every)
    else:
        from isoflop.sweep.slurm import SlurmOptions, run_slurm

        options = SlurmOptions(partition=args.partition, gpus_per_node=args.gpus_per_node, nodes=args.nodes,
                               time_min=args.time, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb)
        summary = run_slurm(sweep, options, retry_failed=args.retry_failed, only=args.only, wait=not args.no_wait,
                            say=_say, progress_every_s=args.progress_every)
        if args.no_wait:
            _say(f"submitted {len(summary.submitted)} jobs; follow them with `isoflop sweep status {args.sweep}`")
            for line in summary.lines()[1:]:
                _say(line)
            return EXIT_FAILED if summary.failed_before or summary.corrupt or summary.blocked else EXIT_OK
    for line in summary.lines():
        _say(line)
    return summary.exit_code()


def add_run_one_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP", help="the sweep folder")
    parser.add_argument("key", metavar="KEY", help="the run's key in the plan (its folder under runs/)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun it even if it failed before")
    parser.add_argument("--threads", type=int, default=None, metavar="T", help="torch intra-op threads")


def run_one(args: argparse.Namespace) -> int:
    from isoflop.sweep.layout import SweepDir
    from isoflop.sweep.run_one import PreviouslyFailed, run_planned
    from isoflop.train.step import Preempted

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads", f"must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        print(f"{args.key}: {torch.get_num_threads()} threads", flush=True)
    try:
        record = run_planned(SweepDir(args.sweep), args.key, retry_failed=args.retry_failed)
    except ConfigError:
        raise
    except PreviouslyFailed as e:
        print(f"isoflop sweep run-one: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Preempted as e:
        print(f"isoflop sweep run-one: {args.key}: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except Exception as e:
        import traceback

        traceback.print_exc()  # into the run's log; the line after it is the reason the driver records
        print(f"isoflop sweep run-one: {args.key}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.key}: val loss {record.val_loss:.4f} | {record.val_bpb:.4f} bits/byte | {record.steps} steps, "
          f"{record.D_tokens:,} tokens in {record.wall_time_s:.1f} s", flush=True)
    return EXIT_OK


RUN_PRELOAD = ("torch", "torch._dynamo", "isoflop.train.run", "isoflop.train.trainer", "isoflop.sweep.run_one",
               "isoflop.sweep.status")
"""What the fork server imports once for all the runs it forks: what a run-one spends its start-up importing
(torch._dynamo: the first optimizer imports it, about 1.5 s)."""


def add_run_server_args(parser: argparse.ArgumentParser) -> None:
    del parser  # it takes its requests on stdin (sweep/spawn.py)


def run_server(args: argparse.Namespace) -> int:
    """The fork server `sweep run` starts its runs from (sweep/spawn.py): it imports RUN_PRELOAD and builds the
    parser once, then forks a child running `isoflop sweep run-one ...` per request, exactly as the command."""
    del args
    from isoflop.cli import build_parser, main
    from isoflop.sweep.spawn import serve

    return serve(main, preload=RUN_PRELOAD, warm=build_parser)


def add_status_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP", help="the sweep folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object (runs, counts)")
    parser.add_argument("--no-scheduler", action="store_true", help="read the folder only (do not ask Slurm)")


def status(args: argparse.Namespace) -> int:
    from isoflop.sweep.layout import SweepDir
    from isoflop.sweep.status import format_status, sweep_status

    result = sweep_status(SweepDir(args.sweep).require_sweep(), scheduler=not args.no_scheduler)
    if args.json:
        print_json(result.to_dict())
    else:
        print(format_status(result))
    return EXIT_OK

