"""Run a study: train its runs into OUT/runs/<name>, measure them, write the report (`isoflop report`).

Finished runs are skipped and partial ones resumed from their newest checkpoint, so an interrupted study
continues where it stopped; a folder holding a run made with other settings is refused before any work.
`overrides` (`--set` text) apply to every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isoflop.config import ConfigError, apply_overrides
from isoflop.rundir import RunDir
from isoflop.rundir.atomic import check_empty_or_absent
from isoflop.studies import Study
from isoflop.train.spec import ExperimentConfig

RUNS_DIR = "runs"
"""Where a study's runs go under its output folder."""


def run_study(study: Study, out: Path, *, smoke: bool = False, overrides: list[str] | None = None, jobs: int = 1,
              progress: Callable[[str], None] = lambda _line: None) -> dict[str, Path]:
    """Train what is not done yet (`study.execute`), measure, write report.md, results.json and the plot; their
    paths."""
    from isoflop.science.report import write_report

    if out.exists() and not out.is_dir():
        raise ConfigError(str(out), "exists and is not a directory")
    if jobs < 1:
        raise ConfigError("--jobs", f"must be at least 1, got {jobs}")
    start = time.perf_counter()
    run_dirs = study.execute(out, smoke=smoke, overrides=list(overrides or []), jobs=jobs, progress=progress)
    progress(f"measuring {len(run_dirs)} runs")
    data = study.measure(run_dirs, smoke=smoke)
    extra: dict[str, Any] = data.setdefault("data", {})
    extra["invocation_wall_s"] = time.perf_counter() - start  # this call only: skipped runs cost nothing here
    extra["training_wall_s"] = {name: run.read_record().wall_time_s for name, run in run_dirs.items()
                                if run.is_complete()}
    return write_report(data, out)


def train_runs(study: Study, out: Path, *, smoke: bool, overrides: list[str],
               progress: Callable[[str], None]) -> dict[str, RunDir]:
    """The default `Study.execute`: train `study.runs` one after another into OUT/runs/<name>, skipping finished
    runs and resuming partial ones; every run directory by name."""
    from isoflop.train.run import run_training

    run_dirs = {name: RunDir(out / RUNS_DIR / name) for name in study.runs(out, smoke=smoke)}
    check_runs(_with_overrides(study.runs(out, smoke=smoke), overrides), run_dirs)  # before any work
    study.prepare_inputs(out, smoke=smoke, progress=progress)
    # A study's runs may read what prepare_inputs made (compressed-text's tokenizer folders): take them again.
    configs = _with_overrides(study.runs(out, smoke=smoke), overrides)
    check_runs(configs, run_dirs)
    for i, (name, cfg) in enumerate(configs.items(), 1):
        run = run_dirs[name]
        if run.is_complete():
            progress(f"[{i}/{len(configs)}] {name}: finished, skipped")
            continue
        progress(f"[{i}/{len(configs)}] {name}: {'resuming' if run.is_run() else 'training'} into {run.path}")
        run_training(cfg, run.path, resume=run.is_run())
    return run_dirs


def check_runs(configs: dict[str, ExperimentConfig], run_dirs: dict[str, RunDir]) -> None:
    """Refuse a folder whose runs were made with other settings (ConfigError). A saved config is read back
    through the current schema first, so a config field added since (with its default) is no difference."""
    from isoflop.train.run import saved_config

    for name, cfg in configs.items():
        run = run_dirs[name]
        if run.is_run():
            difference = run.config_difference(cfg.to_dict(), saved_config)
            if difference is not None:
                raise ConfigError(str(run.path), f"holds a run with a different config (at {difference})")
        else:
            try:
                check_empty_or_absent(run.path)
            except ConfigError:
                raise ConfigError(str(run.path), "exists, holds no run, and is not empty") from None


def _with_overrides(configs: dict[str, ExperimentConfig], overrides: list[str] | None) -> dict[str, ExperimentConfig]:
    if not overrides:
        return configs
    return {name: ExperimentConfig.from_dict(apply_overrides(cfg.to_dict(), overrides, ExperimentConfig))
            for name, cfg in configs.items()}
