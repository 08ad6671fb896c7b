"""What run_training guards a run with: the lock (a second trainer on the folder is refused), and the failure
record (written when training raises, cleared by a later finish)."""

from __future__ import annotations

import io
import os

import pytest
import torch

from isoflop.cli.common import load_experiment
from isoflop.config import ConfigError
from isoflop.data.loader import TrainLoader
from isoflop.rundir import RunDir
from isoflop.train.run import run_training
from isoflop.train.step import NonFiniteLoss
from tests.conftest import tiny_overrides


def _cfg(corpus, steps=8, *extra):
    return load_experiment("tiny", tiny_overrides(corpus, steps) + list(extra))


def test_a_second_trainer_on_the_folder_is_refused(tmp_path, corpus_dir, cache_dir, monkeypatch):
    run = RunDir(tmp_path / "run")
    lock = run.acquire_lock()  # as a trainer in another process would hold it
    try:
        with pytest.raises(ConfigError, match=rf"another process is training this run \(pid {os.getpid()}\)") as e:
            run_training(_cfg(corpus_dir), run.path, stream=io.StringIO())
        assert e.value.key == str(run.path) and not run.is_run()
    finally:
        lock.release()
    # the lock file left behind does not stop a fresh start, and training holds the lock while it runs
    seen = []
    real_next = TrainLoader.next

    def next_and_look(self):
        seen.append(run.is_locked())
        return real_next(self)

    monkeypatch.setattr(TrainLoader, "next", next_and_look)
    run_training(_cfg(corpus_dir, 2), run.path, stream=io.StringIO())
    assert seen == [True, True] and not run.is_locked() and run.is_complete()


def test_bad_input_into_a_new_folder_leaves_no_folder_and_no_failure(tmp_path, corpus_dir, cache_dir):
    for extra in (["schedule.warmup_steps=8"], ["data.corpus=/no/such/corpus"]):
        with pytest.raises(ConfigError):
            run_training(_cfg(corpus_dir, 8, *extra), tmp_path / "new", stream=io.StringIO())
        assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="--resume: no run here"):
        run_training(_cfg(corpus_dir), tmp_path / "new", resume=True, stream=io.StringIO())
    assert not (tmp_path / "new").exists()


def test_a_non_finite_loss_leaves_a_failure_record_that_a_finish_clears(tmp_path, corpus_dir, cache_dir, monkeypatch):
    import isoflop.train.step as loop

    real = loop.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += torch.is_grad_enabled()
        out = real(*a, **k)
        return out * float("nan") if calls["n"] > 2 * 6 else out  # 2 micro-batches per step: NaN at step 7

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    run = RunDir(tmp_path / "run")
    with pytest.raises(NonFiniteLoss):
        run_training(_cfg(corpus_dir), run.path, stream=io.StringIO())
    failure = run.read_failure()
    assert failure["step"] == 7 and failure["reason"].startswith("NonFiniteLoss: loss became nan at step 7")
    monkeypatch.setattr(loop.F, "cross_entropy", real)
    run_training(_cfg(corpus_dir), run.path, resume=True, stream=io.StringIO())
    assert run.is_complete() and run.read_failure() is None


def test_any_exception_while_training_names_its_step(tmp_path, corpus_dir, cache_dir, monkeypatch):
    real_next = TrainLoader.next

    def broken(self):
        if self.next_batch == 2:
            raise RuntimeError("the disk went away")
        return real_next(self)

    monkeypatch.setattr(TrainLoader, "next", broken)
    run = RunDir(tmp_path / "run")
    with pytest.raises(RuntimeError):
        run_training(_cfg(corpus_dir), run.path, stream=io.StringIO())
    assert run.read_failure() | {"time": None} == {"reason": "RuntimeError: the disk went away", "step": 3,
                                                   "time": None}
    assert not run.is_locked()
