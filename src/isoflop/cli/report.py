"""`isoflop report STUDY --out DIR`: train a study's runs into DIR/runs/<name>, measure them, and write
DIR/report.md, DIR/results.json and DIR/<study>.png.

Finished runs (run.json present) are skipped and partial ones resumed from their newest checkpoint, so an
interrupted report continues where it stopped. `--set` overrides apply to every run of the study.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from isoflop.config import ConfigError


def add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", nargs="?", metavar="STUDY", help="the study to run (see --list)")
    parser.add_argument("--out", metavar="DIR", help="where runs and the report go")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long runs that exercise the whole study (for tests; not a measurement)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every run, e.g. --set train.seed=1 (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")


def report(args: argparse.Namespace) -> int:
    from isoflop.recipes.studies import get_study, study_names

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
    study = get_study(args.study)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(str(out), "exists and is not a directory")
    configs = _with_overrides(study.runs(out, smoke=args.smoke), args.overrides)
    run_dirs = {name: out / "runs" / name for name in configs}
    _check_existing(configs, run_dirs)  # a DIR made with other settings is bad input, caught before any work

    from isoflop.science.report import write_report
    from isoflop.train.run import run_training

    study.prepare(out, smoke=args.smoke, progress=_say)
    # A study's runs may read what prepare made (compressed-text's tokenizer folders): take them again.
    configs = _with_overrides(study.runs(out, smoke=args.smoke), args.overrides)
    _check_existing(configs, run_dirs)
    start = time.perf_counter()
    for i, (name, cfg) in enumerate(configs.items(), 1):
        run = run_dirs[name]
        if (run / "run.json").is_file():
            _say(f"[{i}/{len(configs)}] {name}: finished, skipped")
            continue
        resume = (run / "config.json").is_file()
        _say(f"[{i}/{len(configs)}] {name}: {'resuming' if resume else 'training'} into {run}")
        run_training(cfg, run, resume=resume)
    _say(f"measuring {len(configs)} runs")
    data = study.measure(run_dirs, smoke=args.smoke)
    extra = data.setdefault("data", {})
    extra["invocation_wall_s"] = time.perf_counter() - start  # this call only: skipped runs cost nothing here
    extra["training_wall_s"] = {name: json.loads((run / "run.json").read_text())["wall_time_s"]
                                for name, run in run_dirs.items()}
    paths = write_report(data, out)
    _say(f"wrote {paths['report']}, {paths['results']}, {paths['plot']}")
    return 0


def _with_overrides(configs: dict, overrides: list[str]) -> dict:
    if not overrides:
        return configs
    from isoflop.config import apply_overrides
    from isoflop.train.spec import ExperimentConfig

    return {name: ExperimentConfig.from_dict(apply_overrides(cfg.to_dict(), overrides, ExperimentConfig))
            for name, cfg in configs.items()}


def _check_existing(configs: dict, run_dirs: dict[str, Path]) -> None:
    """Refuse a DIR whose runs were made with other settings. A finished run's saved config is read back
    through the current schema first, so a config field added since (with its default) is no difference."""
    from isoflop.train.run import check_run_dir, first_difference
    from isoflop.train.spec import ExperimentConfig

    for name, cfg in configs.items():
        run = run_dirs[name]
        if (run / "run.json").is_file():
            saved = ExperimentConfig.from_dict(json.loads((run / "config.json").read_text())).to_dict()
            if saved != cfg.to_dict():
                raise ConfigError(str(run), f"holds a run with a different config (at {first_difference(saved, cfg.to_dict())})")
        elif (run / "config.json").is_file():
            check_run_dir(run, cfg, resume=True)  # raises when the run there has another config
        elif run.exists() and any(run.iterdir()):
            raise ConfigError(str(run), "exists, holds no run, and is not empty")


def _say(line: str) -> None:
    print(f"isoflop report: {line}", file=sys.stderr, flush=True)
