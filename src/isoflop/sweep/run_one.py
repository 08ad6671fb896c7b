"""Train one planned run of a sweep into its folder: `run_planned(sweep, key)`, what every executor calls.

The run's folder is SWEEP/runs/<key> (a RunDir) and its config is the plan's, so the call is idempotent:

    complete (a record)   its record, after checking its config is the plan's (else ConfigError: corrupt)
    failed (failure file) refused (PreviouslyFailed) unless `retry_failed`, which clears the file and resumes
    started (a config)    resumed from its newest checkpoint (the trainer checks the config is the plan's)
    fresh                 trained from step 0, or a fork: from its trunk's checkpoint at the fork step,
                          which must exist (ConfigError otherwise; the executors wait for it)

A run that raises anything but bad input or a preemption has its failure file written (by the trainer, or
here when the trainer could not), so the executors and `sweep status` see why it stopped. Nothing is deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from isoflop.errors import ConfigError
from isoflop.rundir import RunDir, RunRecord, first_difference
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.plan import InitPoint, PlannedRun, SweepPlan

if TYPE_CHECKING:
    from isoflop.train.run import InitFrom
    from isoflop.train.spec import ExperimentConfig


class PreviouslyFailed(Exception):
    """The run failed before (its failure file is there) and no retry was asked for."""

    def __init__(self, key: str, failure: dict[str, Any]):
        self.key, self.failure = key, failure
        step = failure.get("step")
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{key}: failed before{at}: {failure.get('reason', '?')} (pass --retry-failed to rerun it)")


@dataclass(frozen=True)
class Prepared:
    """What `run_planned` will do with a run, decided from its folder alone."""

    planned: PlannedRun
    cfg: ExperimentConfig
    run: RunDir
    action: str
    """"done", "resume" or "start"."""


def planned_config(planned: PlannedRun, where: str = "the plan") -> ExperimentConfig:
    """The ExperimentConfig the plan gives run `planned` (ConfigError naming the run when it does not read)."""
    from isoflop.train.spec import ExperimentConfig

    try:
        return ExperimentConfig.from_dict(planned.config)
    except ConfigError as e:
        raise ConfigError(f"{where}: run {planned.key}: config.{e.key}", e.problem) from None


def config_difference(run: RunDir, cfg: ExperimentConfig) -> str | None:
    """Where the run's saved config differs from `cfg` (read through today's schema), or None. Raises
    ConfigError when the saved config is missing or unreadable."""
    from isoflop.train.spec import ExperimentConfig

    saved = run.read_config()
    try:
        saved = ExperimentConfig.from_dict(saved).to_dict()
    except ConfigError as e:
        raise ConfigError(str(run.config_file), f"does not read as a config ({e})") from None
    want = cfg.to_dict()
    return None if saved == want else first_difference(saved, want)


def prepare(sweep: SweepDir, key: str, plan: SweepPlan | None = None) -> Prepared:
    plan = plan or sweep.read_plan()
    planned = plan.run(key)
    cfg = planned_config(planned, str(sweep.plan_file))
    run = sweep.run_dir(key)
    if run.is_run():
        difference = config_difference(run, cfg)
        if difference is not None:
            raise ConfigError(str(run.path), f"holds a run whose config differs from the plan's (at {difference}); "
                              "it is left as it is: move it away to retrain it")
    if run.is_complete() and not run.is_run():
        raise ConfigError(str(run.path), f"holds a record ({run.record_file.name}) but no config "
                          f"({run.config_file.name}): not a run of this plan")
    if run.is_complete():
        run.read_record()  # a record that does not read is a corrupt folder, not a result (ConfigError)
        return Prepared(planned, cfg, run, "done")
    return Prepared(planned, cfg, run, "resume" if run.is_run() else "start")


def trunk_checkpoint_ready(sweep: SweepDir, point: InitPoint) -> bool:
    """Whether the checkpoint a fork starts from is there."""
    return point.step in sweep.run_dir(point.key).checkpoint_steps()


def run_planned(sweep: SweepDir, key: str, *, stream: TextIO | None = None,
                retry_failed: bool = False) -> RunRecord:
    """Train, resume or skip run `key` of `sweep`; its record. Raises ConfigError (bad input, a corrupt folder,
    a fork whose trunk checkpoint is missing), PreviouslyFailed, train.step.Preempted (checkpointed, resumable),
    or what training raised (recorded in the failure file)."""
    from isoflop.train.run import run_training
    from isoflop.train.step import Preempted

    sweep.require_sweep()
    plan = sweep.read_plan()
    prep = prepare(sweep, key, plan)
    run = prep.run
    if prep.action == "done":
        return run.read_record()
    failure = read_failure(run)
    if failure is not None:
        if not retry_failed:
            raise PreviouslyFailed(key, failure)
        run.clear_failure()
    init_from = None
    point = prep.planned.init_from
    if point is not None:
        if prep.action == "start":
            init_from = _init_from(sweep, plan, point)
        elif run.read_init() is None and not run.checkpoint_steps():
            # killed between writing its config and its init record: resuming would train it from scratch
            raise ConfigError(str(run.path), f"a fork that was stopped before it recorded its trunk (no "
                              f"{run.init_file.name}); "
                              "move the folder away to start it again")
        # a started fork resumes from its own checkpoint, or from the source its init record names
    try:
        return run_training(prep.cfg, run.path, resume=prep.action == "resume", init_from=init_from, stream=stream)
    except (ConfigError, Preempted):
        raise
    except Exception as e:
        rank0 = os.environ.get("RANK", "0") == "0"  # a multi-rank run's record is rank 0's to write
        if rank0 and read_failure(run) is None and run.is_run():  # the trainer did not record it: record it here
            run.write_failure(f"{type(e).__name__}: {e}", last_step(run))
        raise


def _init_from(sweep: SweepDir, plan: SweepPlan, point: InitPoint) -> InitFrom:
    from isoflop.train.run import InitFrom

    if point.key not in plan.keys():
        raise ConfigError(str(sweep.plan_file), f"a fork starts from run {point.key!r}, which is not in the plan")
    trunk = sweep.run_dir(point.key)
    trunk.checkpoint(point.step)  # ConfigError naming the trunk when its checkpoint is not there (yet)
    return InitFrom(run=trunk.path, step=point.step, optimizer=point.optimizer, data=point.data)


def last_step(run: RunDir) -> int | None:
    """The last logged training step of a run, or None."""
    from isoflop.sweep.status import last_train_record

    record = last_train_record(run)
    return None if record is None else record.get("step")


def read_failure(run: RunDir) -> dict[str, Any] | None:
    """The run's failure record, or None; an unreadable failure file still reads as a failure."""
    try:
        failure = run.read_failure()
    except ConfigError as e:
        return {"reason": f"unreadable failure file ({e.problem})", "step": None}
    if failure is not None and not isinstance(failure, dict):
        return {"reason": "unreadable failure file (not a JSON table)", "step": None}
    return failure
