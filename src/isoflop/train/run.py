"""`run_training`: train a config into a run directory (rundir/layout.py), or resume the run there.

Bad input (ConfigError) is found before any training, and a fresh start whose input turns out bad leaves no
half-written run (the folder is removed again, or emptied when it was an empty folder to begin with). The work
itself is the Trainer's (trainer.py). Around it, for the run's whole life:

- the run lock: rank 0 holds the folder's lock file (RunDir.acquire_lock), so a second trainer on the same
  folder is refused; the kernel drops it when the process ends, however it ends.
- the failure record: an exception while training (other than Preempted and bad input) leaves the failure
  record, its reason and step (RunDir.write_failure); the next finish removes it.
- init from another run (init_from.py), and extending the horizon on resume: `train.horizon` is the one
  subtree a resumed run's config may change. A finished run's record is then set aside, the config and the
  plan are rewritten, and training continues from the newest checkpoint to the new horizon (which may not
  lie before that checkpoint). The data order is a function of (seed, batch index) only (data/loader.py),
  so an extended run is the run that had the longer horizon from the start, when the schedule does not
  depend on the horizon before the old one ended (constant, or WSD's stable phase).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from isoflop.config import ConfigError
from isoflop.data.corpus import corpus_fingerprint
from isoflop.rundir import RunDir, RunRecord
from isoflop.train import parallel
from isoflop.train.init_from import InitFrom, InitSource
from isoflop.train.memory import check_fits
from isoflop.train.run_plan import RunPlan, resolve_plan
from isoflop.train.spec import ExperimentConfig
from isoflop.train.step import NonFiniteLoss, Preempted
from isoflop.train.trainer import Trainer

HORIZON = "train.horizon"
"""The one config subtree a resumed run may change: its length."""

__all__ = ["HORIZON", "InitFrom", "run_training", "saved_config"]


def saved_config(data: dict) -> dict:
    """A saved run config read through today's schema: a field added since, at its default, is no difference."""
    return ExperimentConfig.from_dict(data).to_dict()


def run_training(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
                 init_from: InitFrom | None = None, stream: TextIO | None = None) -> RunRecord:
    """Train `cfg` into `out_dir` (or continue the run there, with `resume`); the run's record. `init_from`
    starts a new run from another run's checkpoint (on resume it must name the run's recorded source, or be
    None). A resumed run that had finished returns its record untouched, unless `cfg` has a new horizon.
    Raises ConfigError (bad input; also when another process trains this run), NonFiniteLoss, or Preempted
    (a stop signal: the step reached is checkpointed)."""
    ctx = parallel.init_distributed(cfg.train.device)
    run = RunDir(out_dir)
    lock, created, checked = None, False, False  # checked: the folder may be written here
    try:
        if ctx.is_main:
            created = run.create()
            lock = run.acquire_lock()  # before the checks, so that no other trainer writes once they pass
        try:
            plan = resolve_plan(cfg, ctx.world_size)
            extending = run.check_start(cfg.to_dict(), resume=resume, normalize=saved_config, may_differ=(HORIZON,))
            checked = True
            source = _init_source(run, init_from, resume, plan)
            if extending:
                done = _check_extension(run, plan)
                if done is not None:  # a finished run whose horizon is only spelled otherwise
                    parallel.barrier(ctx)
                    if ctx.is_main:
                        _rewrite_horizon(run, cfg, plan)
                    return done
            elif resume and run.is_complete():
                return run.read_record()
            check_fits(plan.params["total"], cfg.optim.kind, ctx.device)  # before any allocation
            corpus_fingerprint(cfg.data)  # a missing or unreadable corpus is bad input: fail before writing
            parallel.barrier(ctx)  # every rank checked the directory before rank 0 writes into it
            if extending and ctx.is_main:
                if run.is_complete():
                    run.set_record_aside()  # first: a kill from here on leaves a stopped run, never a wrong record
                _rewrite_horizon(run, cfg, plan)
            trainer = Trainer(cfg, plan, run, ctx, resume=resume, init=source, stream=stream)
            with _failure_recorded(run, ctx, trainer, bad_input_too=False):
                trainer.open()
                trainer.build()
                trainer.resume()  # an init source that does not fit is found here: still bad input
        except ConfigError:
            if ctx.is_main:
                _discard(run, created=created, wrote=checked and not resume)  # no half-written run for bad input
            raise
        with _failure_recorded(run, ctx, trainer, bad_input_too=True):
            trainer.train()
            return trainer.finish()
    finally:
        if lock is not None:
            lock.release()
        parallel.shutdown(ctx)


def _init_source(run: RunDir, init_from: InitFrom | None, resume: bool, plan: RunPlan) -> InitSource | None:
    """The source a run starts from: the request's (fresh), or the one its init record holds (resume)."""
    if not resume:
        source = init_from.resolve() if init_from is not None else None
    else:
        recorded = run.read_init()
        if recorded is None:
            if init_from is not None:
                raise ConfigError(str(run.path), "--init-from: the run here was not started from another run")
            return None
        source = InitSource.from_dict(recorded, where=str(run.init_file))
        difference = init_from.difference(source) if init_from is not None else None
        if difference is not None:
            raise ConfigError(str(run.path), f"--init-from: the run here was started from {source.describe()}, "
                                             f"not from {difference}")
        if run.latest_checkpoint() is not None:
            return source  # it continues from its own checkpoints; the source need not be there any more
        _ = source.checkpoint  # starting afresh needs it: ConfigError when it is gone
    if source is not None and source.data and source.step > plan.steps:
        raise ConfigError("--init-data", f"the source's step {source.step} is past this run's {plan.steps} steps")
    return source


def _check_extension(run: RunDir, plan: RunPlan) -> RunRecord | None:
    """ConfigError when the new horizon ends before the newest checkpoint; the record when a finished run
    already has exactly the new horizon's steps (nothing to train), else None."""
    steps = run.checkpoint_steps()
    if steps and plan.steps < steps[-1]:
        raise ConfigError(HORIZON, f"{plan.steps} steps end before the run's newest checkpoint (step {steps[-1]}); "
                                   "a horizon can be extended, or shortened down to that checkpoint")
    if run.is_complete():
        record = run.read_record()
        if record.steps == plan.steps:
            return record
    return None


def _rewrite_horizon(run: RunDir, cfg: ExperimentConfig, plan: RunPlan) -> None:
    run.write_config(cfg.to_dict())
    run.write_plan(plan.to_dict())


@contextlib.contextmanager
def _failure_recorded(run: RunDir, ctx: parallel.DistContext, trainer: Trainer, *, bad_input_too: bool) -> Iterator[None]:
    """Write the run's failure record when the body raises (not for Preempted, nor, unless `bad_input_too`,
    for ConfigError); the exception goes on."""
    try:
        yield
    except Preempted:
        raise
    except Exception as e:
        if ctx.is_main and run.is_run() and (bad_input_too or not isinstance(e, ConfigError)):
            step = e.step if isinstance(e, NonFiniteLoss) else trainer.at_step
            run.write_failure(f"{type(e).__name__}: {e}", step)
        raise


def _discard(run: RunDir, *, created: bool, wrote: bool) -> None:
    """Remove what a start with bad input left: the folder when this call created it (and either wrote it as
    a fresh run or left only its lock file there), else what a fresh start put into a folder found empty."""
    if created and (wrote or run.holds_only_lock()):
        shutil.rmtree(run.path, ignore_errors=True)
    elif wrote and run.path.is_dir():
        for path in run.path.iterdir():
            if path != run.lock_file:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
