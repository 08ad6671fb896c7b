"""`isoflop report STUDY --out DIR`: run a study (studies/runner.py) and write DIR/report.md,
DIR/results.json and DIR/<study>.png. A rerun skips finished runs and resumes partial ones."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from isoflop.config import ConfigError


def add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", nargs="?", metavar="STUDY", help="the study to run (see --list)")
    parser.add_argument("--out", metavar="DIR", help="where runs and the report go")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long runs that exercise the whole study (for tests; not a measurement)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every run, e.g. --set train.seed=1 (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="runs trained at once, the cores divided among them (studies made of sweeps)")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")


def report(args: argparse.Namespace) -> int:
    from isoflop.studies import get_study, study_names
    from isoflop.studies.runner import run_study

    if args.list:
        names = study_names()
        width = max(map(len, names))
        for name, description in names.items():
            sys.stdout.write(f"{name:<{width}}  {description}\n")
        return 0
    if not args.study:
        raise ConfigError("STUDY", "name a study (isoflop report --list shows them)")
    if not args.out:
        raise ConfigError("--out", "is required")
    paths = run_study(get_study(args.study), Path(args.out), smoke=args.smoke, overrides=args.overrides, jobs=args.jobs,
                      progress=_say)
    _say(f"wrote {paths['report']}, {paths['results']}, {paths['plot']}")
    return 0


def _say(line: str) -> None:
    print(f"isoflop report: {line}", file=sys.stderr, flush=True)
