"""`run_training`: train a config into a run directory (rundir/layout.py), or resume the run there.

Bad input (ConfigError) is found before any compute, and a run directory this call created is removed again
when its input turns out bad, so bad input never leaves a half-written run. The work itself is the Trainer's
(trainer.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TextIO

from isoflop.config import ConfigError
from isoflop.data.corpus import corpus_fingerprint
from isoflop.rundir import RunDir, RunRecord
from isoflop.train import parallel
from isoflop.train.run_plan import resolve_plan
from isoflop.train.spec import ExperimentConfig
from isoflop.train.trainer import Trainer


def saved_config(data: dict) -> dict:
    """A saved run config read through today's schema: a field added since, at its default, is no difference."""
    return ExperimentConfig.from_dict(data).to_dict()


def run_training(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
                 stream: TextIO | None = None) -> RunRecord:
    """Train `cfg` into `out_dir` (or continue the run there, with `resume`); the run's record. A resumed run
    that had finished returns its record untouched. Raises ConfigError (bad input) or NonFiniteLoss."""
    ctx = parallel.init_distributed(cfg.train.device)
    run = RunDir(out_dir)
    created = not run.path.exists()
    try:
        try:
            plan = resolve_plan(cfg, ctx.world_size)
            run.check_start(cfg.to_dict(), resume=resume, normalize=saved_config)
            if resume and run.is_complete():
                return run.read_record()
            corpus_fingerprint(cfg.data)  # a missing or unreadable corpus is bad input: fail before writing
            parallel.barrier(ctx)  # every rank checked the directory before rank 0 writes into it
            trainer = Trainer(cfg, plan, run, ctx, resume=resume, stream=stream)
            trainer.open()
        except ConfigError:
            if created and ctx.is_main:
                shutil.rmtree(run.path, ignore_errors=True)  # no half-written run for bad input
            raise
        trainer.build()
        trainer.resume()
        trainer.train()
        return trainer.finish()
    finally:
        parallel.shutdown(ctx)
