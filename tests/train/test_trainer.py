"""The Trainer's methods in order, with a fake clock: evaluations and checkpoints pause training time."""

from __future__ import annotations

import io

import pytest
import torch

from isoflop.cli.common import load_experiment
from isoflop.rundir import RunDir
from isoflop.train.clock import TrainingClock
from isoflop.train.parallel import DistContext
from isoflop.train.reporters import ConsoleProgress
from isoflop.train.run_plan import resolve_plan
from isoflop.train.trainer import Trainer
from tests.conftest import tiny_overrides


def test_evaluation_and_checkpoint_time_is_not_training_time(tmp_path, corpus_dir, cache_dir):
    """Each batch takes 1 s and each evaluation or checkpoint 100 s. elapsed_s, the throughput, the seconds a
    checkpoint keeps and the record's training_time_s count the batches only; wall_time_s counts everything."""
    fake = [0.0]
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, steps=3)
                          + ["log.every=2", "eval.every=1", "checkpoint.every=1"])
    plan = resolve_plan(cfg)
    trainer = Trainer(cfg, plan, RunDir(tmp_path / "run"), DistContext(0, 1, 0, torch.device("cpu")),
                      stream=io.StringIO(), now=lambda: fake[0])
    trainer.open()
    trainer.build()
    batches, kept = trainer.loader.next, []

    def slow_batch():
        fake[0] += 1.0
        return batches()

    def slow(method):
        def run(step):
            kept.append((method.__name__, step, trainer.clock.training_s))
            fake[0] += 100.0
            return method(step)
        return run

    trainer.loader.next = slow_batch
    trainer.evaluate, trainer.save = slow(trainer.evaluate), slow(trainer.save)
    trainer.resume()
    trainer.train()
    record = trainer.finish()
    logs = trainer.run_dir.metrics.train_records()
    assert [r["step"] for r in logs] == [2, 3] and [r["elapsed_s"] for r in logs] == [2.0, 3.0]
    assert [r["tokens_per_s"] for r in logs] == [plan.tokens_per_step] * 2  # one step's tokens a second
    assert kept == [("evaluate", 1, 1.0), ("save", 1, 1.0), ("evaluate", 2, 2.0), ("save", 2, 2.0),
                    ("evaluate", 3, 3.0), ("save", 3, 3.0)]
    assert record.training_time_s == 3.0 and record.wall_time_s == 603.0


def test_clock_pauses_nest_and_carry_over_a_resume():
    fake = [10.0]
    clock = TrainingClock(training_s=5.0, wall_s=7.0, now=lambda: fake[0])
    fake[0] += 2
    with clock.paused():
        fake[0] += 30
        with clock.paused():
            fake[0] += 30
        assert clock.training_s == 7.0  # standing still while paused
    fake[0] += 1
    assert clock.training_s == 8.0 and clock.wall_s == 7.0 + 63


def test_progress_line_has_step_loss_throughput_and_eta():
    stream = io.StringIO()
    progress = ConsoleProgress(100, stream)
    progress.step({"step": 10, "loss": 2.5, "lr": 1e-3, "tokens": 10_000, "tokens_per_s": 1000.0})
    line = stream.getvalue()
    assert " 10/100" in line and "loss 2.5000" in line and "1.0k tok/s" in line
    assert "ETA 1:30" in line  # 90 steps of 1000 tokens at 1000 tokens/s


@pytest.mark.parametrize("resume", [False, True])
def test_resume_of_a_finished_run_returns_its_record(tmp_path, corpus_dir, cache_dir, resume):
    from isoflop.train.run import run_training

    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, steps=2))
    first = run_training(cfg, tmp_path / "run", stream=io.StringIO())
    if resume:
        assert run_training(cfg, tmp_path / "run", resume=True, stream=io.StringIO()) == first
    else:
        from isoflop.config import ConfigError

        with pytest.raises(ConfigError, match="already holds a run"):
            run_training(cfg, tmp_path / "run", stream=io.StringIO())
