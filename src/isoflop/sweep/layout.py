"""The sweep folder: the only place its names are spelled.

    sweep.toml     the spec as the user wrote it (copied by `sweep plan`)
    plan.json      the SweepPlan (plan.py): every run's key, cell, shape, horizon, FLOPs and config
    runs/<key>/    one run directory per planned run (isoflop.rundir owns what is inside)
    sweep.lock     held by an active `sweep run`, so a second one refuses instead of training twice
    jobs.json      Slurm job ids per run key (slurm executor)
    logs/<key>.log the output of each attempt at a run (`sweep run`'s local executor appends one per launch)
    slurm/         submitit's folder: the sbatch scripts, the pickled jobs and their stdout/stderr
    fit.json       the last `sweep fit`
    report/        `sweep report`: report.md, results.json and the plots (PLOTS)

Nothing here is deleted that a run did not write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import isoflop.rundir.atomic as atomic
from isoflop.errors import ConfigError
from isoflop.rundir.layout import RunDir, read_json
from isoflop.sweep.plan import SweepPlan
from isoflop.sweep.spec import parse_spec

SPEC_FILE = "sweep.toml"
PLAN_FILE = "plan.json"
RUNS_DIR = "runs"
LOCK_FILE = "sweep.lock"
JOBS_FILE = "jobs.json"
LOGS_DIR = "logs"
SLURM_DIR = "slurm"
FIT_FILE = "fit.json"
REPORT_DIR = "report"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOTS = {"isoflop": "isoflop.png", "allocation": "allocation.png", "frontier": "frontier.png",
         "residuals": "residuals.png"}
"""The report's plots by kind (sweep/plots.py draws them)."""


class SweepDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SweepDir({str(self.path)!r})"

    # ------------------------------------------------------------------ paths
    @property
    def spec_file(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def plan_file(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def runs_dir(self) -> Path:
        return self.path / RUNS_DIR

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def jobs_file(self) -> Path:
        return self.path / JOBS_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    def log_file(self, key: str) -> Path:
        """The output of the attempts at run `key` (the run directory itself is rundir's)."""
        return self.logs_dir / f"{key}.log"

    @property
    def slurm_dir(self) -> Path:
        return self.path / SLURM_DIR

    @property
    def fit_file(self) -> Path:
        return self.path / FIT_FILE

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def report_file(self) -> Path:
        return self.report_dir / REPORT_FILE

    @property
    def results_file(self) -> Path:
        return self.report_dir / RESULTS_FILE

    def plot_file(self, kind: str) -> Path:
        """report/<the plot of `kind`>, kind one of PLOTS."""
        return self.report_dir / PLOTS[kind]

    def run_dir(self, key: str) -> RunDir:
        return RunDir(self.runs_dir / key)

    # ------------------------------------------------------------------ state
    def is_sweep(self) -> bool:
        return self.plan_file.is_file()

    def require_sweep(self) -> SweepDir:
        if not self.is_sweep():
            raise ConfigError(str(self.path), f"not a sweep folder (no {PLAN_FILE}; make one with `isoflop sweep plan`)")
        return self

    # ------------------------------------------------------------------ files
    def read_plan(self) -> SweepPlan:
        self.require_sweep()
        return SweepPlan.from_dict(read_json(self.plan_file), where=str(self.plan_file))

    def write_plan(self, plan: SweepPlan) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.plan_file, plan.to_dict())

    def read_spec_text(self) -> str:
        return self.spec_file.read_text()

    def write_spec_text(self, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.spec_file, text)

    def read_jobs(self) -> dict[str, list[str]]:
        if not self.jobs_file.is_file():
            return {}
        data = read_json(self.jobs_file)
        if not isinstance(data, dict):
            raise ConfigError(str(self.jobs_file), "expected a table of run key -> job ids")
        return {str(k): [str(j) for j in v] for k, v in data.items()}

    def add_job(self, key: str, job_id: str) -> None:
        jobs = self.read_jobs()
        jobs.setdefault(key, []).append(str(job_id))
        atomic.write_json(self.jobs_file, jobs)

    def read_fit(self) -> dict[str, Any]:
        return read_json(self.fit_file)

    def write_fit(self, fit: dict[str, Any]) -> None:
        atomic.write_text(self.fit_file, json.dumps(fit, indent=1, default=float) + "\n")

    # ------------------------------------------------------------------ planning
    def place(self, spec_text: str, plan: SweepPlan) -> bool:
        """Make this the sweep folder of `spec_text` and `plan`. Absent or empty: both are written, the folder
        appearing whole or not at all (True). Holding the same spec (as parsed) and a plan with the same runs
        (rungs aside): nothing is written (False). Anything else: ConfigError naming the folder."""
        if not self.spec_file.is_file():
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise ConfigError(str(self.path), f"is not empty and holds no {SPEC_FILE}; plan into a new folder")

            def fill(tmp: Path) -> None:
                atomic.write_text(tmp / SPEC_FILE, spec_text)
                atomic.write_json(tmp / PLAN_FILE, plan.to_dict())

            atomic.build_dir(self.path, fill)
            return True
        if parse_spec(self.read_spec_text(), where=str(self.spec_file)).to_dict() != plan.spec:
            raise ConfigError(str(self.path), f"holds another spec (its {SPEC_FILE} differs); plan into a new folder")
        if not self.is_sweep():  # a spec without a plan: what a writer killed in between leaves
            self.write_plan(plan)
            return True
        have = [r.key for r in self.read_plan().runs if r.role != "rung"]
        if have != plan.keys():
            raise ConfigError(str(self.path), f"holds a plan of this spec with other runs ({PLAN_FILE}: the base "
                                              "config or isoflop changed since); plan into a new folder")
        return False
