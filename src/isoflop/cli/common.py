"""Shared CLI plumbing: a config from a recipe name or a file plus `--set` overrides; JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from isoflop.config import apply_overrides
from isoflop.rundir import RunDir
from isoflop.train.spec import ExperimentConfig


def add_config_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    from isoflop.recipes import RECIPES  # config dataclasses only (no torch): cheap at parser build

    parser.add_argument("target", nargs=None if required else "?", metavar="RECIPE|FILE",
                        help=f"a recipe name ({', '.join(RECIPES)}) or a .toml/.yaml/.json config file; a file "
                             "may name a recipe to start from with `base = \"tiny\"`")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.d_model=192 (repeatable)")


def load_experiment(target: str, overrides: list[str]) -> ExperimentConfig:
    from isoflop.recipes import experiment_data

    data = apply_overrides(experiment_data(target), overrides, ExperimentConfig)
    return ExperimentConfig.from_dict(data)


def load_run_experiment(run: RunDir, overrides: list[str]) -> ExperimentConfig:
    """The config a run directory holds, with `--set` overrides."""
    return ExperimentConfig.from_dict(apply_overrides(run.read_config(), overrides, ExperimentConfig))


def print_json(obj: Any) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, indent=1, default=float) + "\n")
    sys.stdout.flush()


def require_run_dir(path: str) -> Path:
    """`path` as a Path, or ConfigError when it holds no run."""
    return RunDir(path).require_run().path

