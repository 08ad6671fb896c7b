"""Extending a run's horizon on resume: a finished (or stopped) run continues to the new horizon and ends as
the run that had that horizon from the start, bit for bit; only train.horizon may change."""

from __future__ import annotations

import io
import shutil

import pytest
import torch

from isoflop.cli import main
from isoflop.cli.common import load_experiment
from isoflop.config import ConfigError
from isoflop.rundir import RunDir
from isoflop.train import checkpoint
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides

CONSTANT = ["schedule.kind=constant", "schedule.warmup_steps=2"]
DETERMINISTIC = ("step", "loss", "lr", "grad_norm", "tokens", "flops", "val_loss", "val_bpb")


def _cfg(corpus, steps, *extra):
    return load_experiment("tiny", tiny_overrides(corpus, steps) + CONSTANT + list(extra))


def _metrics(run) -> list[dict]:
    return [{k: r[k] for k in DETERMINISTIC if k in r} | {"kind": r["kind"]} for r in RunDir(run).metrics.read()]


def _final_weights(run, step):
    return checkpoint.load(RunDir(run).step_dir(step), with_optimizer=False)[0]


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, corpus_dir, cache_dir):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    reference = run_training(_cfg(corpus_dir, 12), straight, stream=io.StringIO())
    first = run_training(_cfg(corpus_dir, 8), extended, stream=io.StringIO())
    first_bytes = RunDir(extended).record_file.read_bytes()
    record = run_training(_cfg(corpus_dir, 12), extended, resume=True, stream=io.StringIO())

    assert record.val_loss == reference.val_loss and record.steps == 12 and record.D_tokens == reference.D_tokens
    assert _metrics(extended) == _metrics(straight)
    a, b = _final_weights(extended, 12), _final_weights(straight, 12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = RunDir(extended)
    assert run.earlier_records() == [run.earlier_record_file(8)]
    assert run.earlier_record_file(8).read_bytes() == first_bytes and first.steps == 8  # set aside, not rewritten
    assert run.read_config()["train"]["horizon"]["steps"] == 12 and run.read_plan()["steps"] == 12
    assert run.is_complete()
    # resuming the extended run again changes nothing
    assert run_training(_cfg(corpus_dir, 12), extended, resume=True, stream=io.StringIO()) == record


def test_extending_a_stopped_run_on_the_command_line(tmp_path, corpus_dir, cache_dir, capsys):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_training(_cfg(corpus_dir, 12), straight, stream=io.StringIO())
    run_training(_cfg(corpus_dir, 8, "checkpoint.keep=3"), stopped, stream=io.StringIO())
    shutil.rmtree(RunDir(stopped).step_dir(8))  # as if killed after step 8 was logged, before its checkpoint
    RunDir(stopped).record_file.unlink()
    assert main(["train", str(stopped), "--resume", "--set", "train.horizon.steps=12"]) == 0
    assert "12 steps" in capsys.readouterr().out
    assert _metrics(stopped) == _metrics(straight)
    assert RunDir(stopped).earlier_records() == []  # nothing had finished: nothing set aside


def test_only_the_horizon_may_change_and_never_below_the_newest_checkpoint(tmp_path, corpus_dir, cache_dir):
    run = tmp_path / "run"
    run_training(_cfg(corpus_dir, 8), run, stream=io.StringIO())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"different config \(at optim.lr\)"):
        run_training(_cfg(corpus_dir, 12, "optim.lr=0.02"), run, resume=True, stream=io.StringIO())
    with pytest.raises(ConfigError, match=r"6 steps end before the run's newest checkpoint \(step 8\)") as e:
        run_training(_cfg(corpus_dir, 6), run, resume=True, stream=io.StringIO())
    assert e.value.key == "train.horizon"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # refusals write nothing
    # the same steps spelled as tokens: the finished run is already there, only its config is rewritten
    tokens = 8 * 8 * 32
    spelled = _cfg(corpus_dir, 8, "train.horizon.steps=null", f"train.horizon.tokens={tokens}")
    assert run_training(spelled, run, resume=True, stream=io.StringIO()).steps == 8
    assert RunDir(run).read_config()["train"]["horizon"]["tokens"] == tokens
    assert RunDir(run).is_complete() and RunDir(run).earlier_records() == []
