"""Init from another run's checkpoint: a WSD cooldown fork equals the uninterrupted run bit for bit, weights
carry over into a changed config (longer context with RoPE scaling), shapes that do not fit are named, and a
resumed fork continues from its own checkpoints."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from isoflop.cli.common import load_experiment
from isoflop.config import ConfigError
from isoflop.rundir import RunDir
from isoflop.train import checkpoint
from isoflop.train.init_from import InitFrom
from isoflop.train.parallel import DistContext
from isoflop.train.run import run_training
from isoflop.train.run_plan import resolve_plan
from isoflop.train.trainer import Trainer
from tests.conftest import tiny_overrides

DETERMINISTIC = ("step", "loss", "lr", "grad_norm", "tokens", "flops", "val_loss", "val_bpb")
# WSD with an absolute warmup: a fork of S_b steps decays over its last round(0.25 * S_b) steps
WSD = ["schedule.kind=wsd", "schedule.decay=0.25", "schedule.warmup_steps=2", "schedule.floor=0.0"]


def _cfg(corpus, steps, *extra):
    return load_experiment("tiny", tiny_overrides(corpus, steps) + list(extra))


def _train(cfg, out, **kw):
    return run_training(cfg, out, stream=io.StringIO(), **kw)


def _metrics(run: Path) -> list[dict]:
    return [{k: r[k] for k in DETERMINISTIC if k in r} | {"kind": r["kind"]} for r in RunDir(run).metrics.read()]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, tied ones under each of their names."""
    return checkpoint.load(RunDir(run).step_dir(step), with_optimizer=False)[0]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_wsd_fork_from_a_trunk_equals_the_uninterrupted_run(tmp_path, corpus_dir, cache_dir):
    s_b = 12
    s = s_b - round(0.25 * s_b)  # 9: the fork's decay starts here, inside the trunk's stable phase
    trunk, fork, single = tmp_path / "trunk", tmp_path / "fork", tmp_path / "single"
    _train(_cfg(corpus_dir, 20, *WSD, f"checkpoint.at=[{s}]"), trunk)
    assert RunDir(trunk).checkpoint_steps() == [s, 16, 20]  # keep=2 prunes 4, 8 and 12, never an `at` step
    fork_cfg = _cfg(corpus_dir, s_b, *WSD)
    record = _train(fork_cfg, fork, init_from=InitFrom(trunk, s, optimizer=True, data=True))
    reference = _train(fork_cfg, single)

    assert record.val_loss == reference.val_loss
    assert _same_weights(_weights(fork, s_b), _weights(single, s_b))
    # every record after the fork point is the single run's (and the log up to it is the trunk's, so the
    # fork's log reads as the single run's whole)
    assert [m for m in _metrics(fork) if m["step"] > s] == [m for m in _metrics(single) if m["step"] > s]
    assert _metrics(fork) == _metrics(single)
    assert [m["step"] for m in _metrics(fork) if m["kind"] == "train"] == list(range(1, s_b + 1))
    init = RunDir(fork).read_init()
    assert (init["run"], init["step"], init["optimizer"], init["data"]) == (str(trunk.resolve()), s, True, True)
    assert 0 < init["training_s"] <= record.training_time_s  # the record's seconds include the trunk's up to s
    assert record.D_tokens == reference.D_tokens and record.steps == s_b


def test_without_the_optimizer_state_the_fork_differs(tmp_path, corpus_dir, cache_dir):
    """The invariant above is not trivially true: leaving out the optimizer state (Adam's moments) changes
    the very first step after the fork point, though the weights, data and schedule are the same."""
    trunk = tmp_path / "trunk"
    _train(_cfg(corpus_dir, 8, *WSD, "eval.every=0"), trunk)
    cfg = _cfg(corpus_dir, 8, *WSD, "eval.every=0")
    with_opt = _train(cfg, tmp_path / "a", init_from=InitFrom(trunk, 4, optimizer=True, data=True))
    without = _train(cfg, tmp_path / "b", init_from=InitFrom(trunk, 4, optimizer=False, data=True))
    steps = {run: {m["step"]: m["loss"] for m in _metrics(tmp_path / run) if m["kind"] == "train"} for run in "ab"}
    assert steps["a"][4] == steps["b"][4]  # the trunk's own history, carried over
    assert steps["a"][6] != steps["b"][6] and with_opt.val_loss != without.val_loss
    assert _metrics(tmp_path / "a") == _metrics(trunk)  # with it, the fork is the trunk


def test_weights_carry_into_a_longer_context_with_rope_scaling(tmp_path, corpus_dir, cache_dir):
    source = tmp_path / "source"
    _train(_cfg(corpus_dir, 4, "eval.every=0"), source)
    longer = _cfg(corpus_dir, 4, "data.seq_len=64", "model.train_length=32", "model.rope.kind=linear",
                  "model.rope.factor=2.0", "train.batch_size=4", "train.micro_batch_size=2", "eval.every=0")
    trainer = Trainer(longer, resolve_plan(longer), RunDir(tmp_path / "new"), DistContext(0, 1, 0, torch.device("cpu")),
                      init=InitFrom(source, 4).resolve(), stream=io.StringIO())
    trainer.open()
    trainer.build()
    trainer.resume()
    assert trainer.start_step == 0 and trainer.loader.next_batch == 0  # weights only: a new run at step 0
    assert _same_weights(trainer.raw_model.state_dict(), _weights(source, 4))
    assert RunDir(tmp_path / "new").read_init()["step"] == 4
    trainer.train()
    assert trainer.finish().seq_len == 64


@pytest.mark.parametrize("extra,problem", [
    (["model.d_model=48"], r"tensor \S+ has shape \[\d+(, \d+)*\] in the checkpoint, \[\d+(, \d+)*\] in this model"),
    (["model.n_layers=3"], r"tensor layers\.2\.\S+ of this model is not in the checkpoint"),
    (["model.n_layers=1"], r"tensor layers\.1\.\S+ of the checkpoint has no place in this model"),
])
def test_tensors_that_do_not_fit_are_named_and_leave_no_run(tmp_path, corpus_dir, cache_dir, extra, problem):
    source = tmp_path / "source"
    _train(_cfg(corpus_dir, 4, "eval.every=0"), source)
    with pytest.raises(ConfigError, match=problem) as e:
        _train(_cfg(corpus_dir, 4, *extra), tmp_path / "new", init_from=InitFrom(source))
    assert e.value.key == str(RunDir(source).step_dir(4))
    assert not (tmp_path / "new").exists()


def test_a_bad_source_is_refused_before_anything_is_written(tmp_path, corpus_dir, cache_dir):
    source = tmp_path / "source"
    _train(_cfg(corpus_dir, 4, "eval.every=0"), source)
    cfg = _cfg(corpus_dir, 4)
    for init, match in [(InitFrom(tmp_path / "nothing"), "not a run directory"),
                        (InitFrom(source, 3), r"no checkpoint at step 3 \(has \[4\]\)"),
                        (InitFrom(source, 4, data=True), None)]:
        if match is None:  # the source's step 4 is past a 2-step run: its data position cannot be continued
            cfg, match = _cfg(corpus_dir, 2), "past this run's 2 steps"
        with pytest.raises(ConfigError, match=match):
            _train(cfg, tmp_path / "new", init_from=init)
        assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="--init-optimizer: the source's optimizer is adamw, this run's lion"):
        _train(_cfg(corpus_dir, 4, "optim.kind=lion"), tmp_path / "new", init_from=InitFrom(source, optimizer=True))
    assert not (tmp_path / "new").exists()


def test_a_resumed_fork_continues_from_its_own_checkpoints(tmp_path, corpus_dir, cache_dir):
    """A fork (weights only: fine-tuning at step 0) killed after its checkpoint at step 4 resumes from that
    checkpoint, not from the source again: it does so even with the source's checkpoint gone, and ends as the
    uninterrupted fork."""
    source = tmp_path / "source"
    _train(_cfg(corpus_dir, 4, "eval.every=0"), source)
    cfg = _cfg(corpus_dir, 8, "checkpoint.keep=3")
    _train(cfg, tmp_path / "straight", init_from=InitFrom(source))
    killed = tmp_path / "killed"
    _train(cfg, killed, init_from=InitFrom(source))
    shutil.rmtree(RunDir(killed).step_dir(8))  # as if killed after step 8 was logged, before its checkpoint
    RunDir(killed).record_file.unlink()
    shutil.rmtree(source)  # the source is gone: only the fork's own checkpoint can be used
    stream = io.StringIO()
    run_training(cfg, killed, resume=True, stream=stream)
    assert "resumed from step_0000004" in stream.getvalue() and "initialised from" not in stream.getvalue()
    assert _metrics(killed) == _metrics(tmp_path / "straight")
    assert _same_weights(_weights(killed, 8), _weights(tmp_path / "straight", 8))
    with pytest.raises(ConfigError, match="--init-from: the run here was started from"):
        run_training(cfg, killed, resume=True, init_from=InitFrom(tmp_path / "elsewhere"), stream=io.StringIO())


def test_a_fork_killed_before_its_first_checkpoint_starts_from_the_source_again(tmp_path, corpus_dir, cache_dir):
    trunk = tmp_path / "trunk"
    _train(_cfg(corpus_dir, 12, *WSD, "eval.every=0"), trunk)
    cfg = _cfg(corpus_dir, 12, *WSD, "eval.every=0", "checkpoint.every=0")
    init = InitFrom(trunk, 8, optimizer=True, data=True)
    _train(cfg, tmp_path / "straight", init_from=init)
    killed = tmp_path / "killed"
    _train(cfg, killed, init_from=init)
    shutil.rmtree(RunDir(killed).checkpoints_dir)
    RunDir(killed).record_file.unlink()
    stream = io.StringIO()
    run_training(cfg, killed, resume=True, init_from=init, stream=stream)  # the same source: accepted
    assert "initialised from" in stream.getvalue()
    assert _metrics(killed) == _metrics(tmp_path / "straight")
    assert json.loads(RunDir(killed).init_file.read_text())["step"] == 8
