"""Preemption: SIGTERM or SIGUSR1 during training checkpoints the step reached and stops (Preempted; the CLI
exits 3), and --resume then ends as the uninterrupted run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from isoflop.cli import EXIT_PREEMPTED
from isoflop.cli.common import load_experiment
from isoflop.data.loader import TrainLoader
from isoflop.rundir import RunDir
from isoflop.train.run import run_training
from isoflop.train.step import Preempted
from tests.conftest import tiny_overrides

DETERMINISTIC = ("step", "loss", "lr", "grad_norm", "tokens", "flops", "val_loss", "val_bpb")


def _metrics(run) -> list[dict]:
    return [{k: r[k] for k in DETERMINISTIC if k in r} | {"kind": r["kind"]} for r in RunDir(run).metrics.read()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_checkpoints_the_step_and_raises_preempted(tmp_path, corpus_dir, cache_dir, monkeypatch,
                                                                 signum):
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, 12))
    run_training(cfg, tmp_path / "straight", stream=io.StringIO())
    real_next, before = TrainLoader.next, signal.getsignal(signum)

    def next_then_signal(self):
        if self.next_batch == 5:  # while step 6 is being trained
            os.kill(os.getpid(), signum)
        return real_next(self)

    monkeypatch.setattr(TrainLoader, "next", next_then_signal)
    run = RunDir(tmp_path / "run")
    with pytest.raises(Preempted) as e:
        run_training(cfg, run.path, stream=io.StringIO())
    assert e.value.step == 6 and e.value.signum == signum and signal.Signals(signum).name in str(e.value)
    assert signal.getsignal(signum) is before  # the previous handler is back
    assert run.checkpoint_steps() == [4, 6]  # every=4, and the step the signal ended
    assert run.metrics.train_records()[-1]["step"] == 6
    assert not run.is_complete() and run.read_failure() is None and not run.is_locked()
    monkeypatch.setattr(TrainLoader, "next", real_next)
    run_training(cfg, run.path, resume=True, stream=io.StringIO())
    assert _metrics(run.path) == _metrics(tmp_path / "straight")


def test_sigterm_to_isoflop_train_exits_3_and_resume_finishes_as_the_uninterrupted_run(tmp_path, corpus_dir,
                                                                                       cache_dir):
    overrides = tiny_overrides(corpus_dir, 60) + ["checkpoint.every=0", "eval.every=0"]
    reference = run_training(load_experiment("tiny", overrides), tmp_path / "straight", stream=io.StringIO())
    env = {**os.environ, "ISOFLOP_CACHE": str(cache_dir)}
    run = RunDir(tmp_path / "run")
    args = [sys.executable, "-m", "isoflop", "train", "tiny", "--out", str(run.path),
            *[a for o in overrides for a in ("--set", o)]]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(run.metrics.train_records()) < 3:  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    assert run.is_locked()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, stderr
    assert "Traceback" not in stderr
    reached = run.metrics.train_records()[-1]["step"]
    assert 3 <= reached < 60 and run.checkpoint_steps() == [reached]  # checkpoint.every=0: only the signal's
    assert stderr.strip().splitlines()[-1] == (f"isoflop train: SIGTERM received: checkpointed step {reached} and "
                                               "stopped; --resume continues the run")
    assert not run.is_locked() and not run.is_complete()
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert run.read_record().val_loss == reference.val_loss
    assert _metrics(run.path) == _metrics(tmp_path / "straight")
