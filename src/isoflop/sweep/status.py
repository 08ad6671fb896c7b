"""`isoflop sweep status`: the state of every planned run, read from the sweep folder and the scheduler.

No daemon keeps state: each call reads the folder (records, failure files, run locks, metrics) and, where
the sweep has Slurm jobs (jobs.json), asks Slurm about each run's latest job (slurm.job_states). States:

    done     the run's record is there and reads, and its config is the plan's
    running  the trainer holds the run's lock now, or its Slurm job is RUNNING
    queued   its Slurm job is PENDING (or being requeued)
    stopped  started (its config saved) and not running: `sweep run` resumes it from its newest checkpoint
    pending  not started
    failed   its failure file is there (the reason and step with it)
    corrupt  a folder that cannot be a result: its record or config unreadable, a config that is not the
             plan's, or files but no config. Listed, never fitted, never deleted.

Torch-free: configs are compared through the config schema (train/spec.py), which imports no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from isoflop.errors import ConfigError
from isoflop.rundir import RunDir
from isoflop.sweep.layout import SweepDir

STATES = ("done", "running", "queued", "stopped", "pending", "failed", "corrupt")
_TAIL_BYTES = 16384  # enough for the last few metrics records of any run


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    key: str
    role: str
    budget: float | None
    state: str
    """One of STATES."""
    planned_steps: int
    step: int | None = None
    """done: the record's steps; otherwise the last logged step."""
    loss: float | None = None
    """The last logged training loss (not done), or None."""
    val_loss: float | None = None
    val_bpb: float | None = None
    time_s: float | None = None
    """done: the record's wall time; otherwise the last logged training seconds."""
    reason: str | None = None
    """failed / corrupt: why."""
    job: str | None = None
    """The latest Slurm job id of the run, when it has one."""
    job_state: str | None = None
    """That job's state as Slurm reports it."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class SweepStatus:
    runs: list[RunStatus]
    driver: int | None = None
    """The pid of the active `sweep run` holding the sweep lock (0: unknown), or None."""
    unplanned: list[str] = field(default_factory=list)
    """Folders under runs/ that the plan does not name (left alone)."""
    scheduler: str | None = None
    """Where job states came from ("sacct", "scontrol"), or why there were none."""

    def counts(self) -> dict[str, int]:
        return {s: sum(r.state == s for r in self.runs) for s in STATES}

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "counts": self.counts(), "driver": self.driver,
                "unplanned": self.unplanned, "scheduler": self.scheduler}


def last_train_record(run: RunDir) -> dict[str, Any] | None:
    """The last training record of a run's metrics log, read from the file's end (a run may log millions)."""
    path = run.metrics.path
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut, or the first, partial line of the tail
        if isinstance(record, dict) and record.get("kind") == "train":
            return record
    return None


def run_status(sweep: SweepDir, planned: Any, jobs: dict[str, tuple[str, str]] | None = None) -> RunStatus:
    """The state of one planned run (`planned`: a PlannedRun); `jobs`: key -> (job id, Slurm state)."""
    from isoflop.sweep.run_one import config_difference, planned_config, read_failure

    run = sweep.run_dir(planned.key)
    base = dict(key=planned.key, role=planned.role, budget=planned.budget, planned_steps=planned.steps)
    job, job_state = (jobs or {}).get(planned.key, (None, None))
    base.update(job=job, job_state=job_state)
    if not run.path.exists():
        return RunStatus(**base, state=_scheduled(job_state) or "pending")
    if not run.is_run():
        failure = read_failure(run)
        if failure is not None:
            return RunStatus(**base, state="failed", reason=failure.get("reason"), step=failure.get("step"))
        if run.is_locked():  # the trainer is starting it: its config comes next
            return RunStatus(**base, state="running", step=0)
        if any(run.path.iterdir()):
            return RunStatus(**base, state="corrupt", reason=f"files but no {run.config_file.name} (not a run)")
        return RunStatus(**base, state=_scheduled(job_state) or "pending")
    try:
        difference = config_difference(run, planned_config(planned, str(sweep.plan_file)))
    except ConfigError as e:
        return RunStatus(**base, state="corrupt", reason=str(e))
    if difference is not None:
        return RunStatus(**base, state="corrupt", reason=f"its config differs from the plan's at {difference}")
    if run.is_complete():
        try:
            record = run.read_record()
        except ConfigError as e:
            return RunStatus(**base, state="corrupt", reason=str(e))
        return RunStatus(**base, state="done", step=record.steps, val_loss=record.val_loss, val_bpb=record.val_bpb,
                         time_s=record.wall_time_s)
    last = last_train_record(run) or {}
    progress = dict(step=last.get("step"), loss=last.get("loss"), time_s=last.get("elapsed_s"))
    failure = read_failure(run)
    if run.is_locked() or job_state == "RUNNING":
        return RunStatus(**base, **progress, state="running")
    if failure is not None:
        return RunStatus(**{**base, **progress, "step": failure.get("step", progress["step"])}, state="failed",
                         reason=failure.get("reason"))
    return RunStatus(**base, **progress, state=_scheduled(job_state) or "stopped")


def sweep_status(sweep: SweepDir, *, scheduler: bool = True) -> SweepStatus:
    """Every planned run's state, in plan order; with `scheduler`, Slurm's view of the sweep's jobs too."""
    from isoflop.sweep.lock import driver_pid

    plan = sweep.read_plan()
    jobs, source = ({}, None)
    if scheduler and sweep.read_jobs():
        from isoflop.sweep.slurm import job_states

        jobs, source = job_states(sweep)
    runs = [run_status(sweep, planned, jobs) for planned in plan.runs]
    planned_keys = set(plan.keys())
    unplanned = sorted(p.name for p in sweep.runs_dir.iterdir() if p.name not in planned_keys) \
        if sweep.runs_dir.is_dir() else []
    return SweepStatus(runs=runs, driver=driver_pid(sweep.lock_file), unplanned=unplanned, scheduler=source)


def _scheduled(job_state: str | None) -> str | None:
    """queued / running for a Slurm job that is not finished, else None (the folder decides)."""
    if job_state is None:
        return None
    if job_state == "RUNNING":
        return "running"
    if job_state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED"):
        return "queued"
    return None


def format_status(status: SweepStatus) -> str:
    """The table `sweep status` prints, with the counts at the bottom."""
    lines = []
    width = max((len(r.key) for r in status.runs), default=3)
    for r in status.runs:
        budget = f"{r.budget:.2e}" if r.budget is not None else "-"
        job = f"  [job {r.job} {r.job_state}]" if r.job and r.job_state else f"  [job {r.job}]" if r.job else ""
        lines.append(f"{r.key:<{width}}  {r.role:<5}  C={budget:<8}  {r.state:<8}  {_detail(r)}{job}")
    counts = status.counts()
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"  ({len(status.runs)} runs)")
    if status.driver is not None:
        lines.append(f"an active `sweep run` holds the sweep (pid {status.driver or '?'})")
    if status.unplanned:
        lines.append(f"not in the plan (left alone): {', '.join(status.unplanned)}")
    if status.scheduler and not status.scheduler.startswith(("sacct", "scontrol")):
        lines.append(f"slurm: {status.scheduler}")
    return "\n".join(lines)


def _detail(r: RunStatus) -> str:
    if r.state == "done":
        return f"val_loss {r.val_loss:.4f}  {r.step} steps  {r.time_s:.1f} s"
    if r.state in ("failed", "corrupt"):
        at = f" (step {r.step})" if r.step is not None else ""
        return f"{r.reason}{at}"
    if r.step is not None:
        loss = f"  loss {r.loss:.4f}" if r.loss is not None else ""
        return f"step {r.step}/{r.planned_steps}{loss}"
    return f"0/{r.planned_steps} steps"
