"""`isoflop sweep SUB`: plan a grid of runs for a set of budgets, run it here or on Slurm, fit, report, predict.

Each subcommand is a Verb-like pair of "module:function" texts (modules under isoflop.cli), imported only when
the parser is built, so `isoflop --help` stays cheap.
"""

from __future__ import annotations

import argparse

from isoflop.cli import Verb

SUBCOMMANDS: dict[str, Verb] = {
    "plan": Verb("sweep_plan:plan", "sweep_plan:add_plan_args",
                 "the grid of a sweep.toml: every run's N, shape, D, steps, FLOPs and estimated time"),
    "run": Verb("sweep_run:run", "sweep_run:add_run_args",
                "train the runs not done yet, here (--jobs K) or on Slurm (--executor slurm)"),
    "run-one": Verb("sweep_run:run_one", "sweep_run:add_run_one_args",
                    "train one planned run of a sweep (what `sweep run` launches)"),
    "run-server": Verb("sweep_run:run_server", "sweep_run:add_run_server_args",
                       "(internal) the fork server `sweep run` forks its runs from (ISOFLOP_SWEEP_SPAWN)"),
    "status": Verb("sweep_run:status", "sweep_run:add_status_args",
                   "done / running / failed / pending of every run, with losses"),
    "fit": Verb("sweep_fit:fit", "sweep_fit:add_fit_args",
                "approaches 1, 2 and 3 on the sweep's runs, with bootstrap intervals"),
    "report": Verb("sweep_fit:report", "sweep_fit:add_report_args", "report.md, results.json and plots"),
    "predict": Verb("sweep_fit:predict", "sweep_fit:add_predict_args",
                    "train the fitted law's compute-optimal model at a larger budget; predicted vs measured"),
}


def add_sweep_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sweep_command", required=True, parser_class=type(parser))
    for name, verb in SUBCOMMANDS.items():
        run, add_args = verb.load()
        sub_parser = sub.add_parser(name, help=verb.help, description=verb.help)
        add_args(sub_parser)
        sub_parser.set_defaults(func=run)


def sweep(args: argparse.Namespace) -> int:  # never called: each subcommand sets its own func
    raise AssertionError("argparse dispatches to the subcommand")
