"""Training end to end on the CPU: the run directory contract, bit-exact resume, a kill at any moment,
a non-finite loss, DDP equal to one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from isoflop.cli.common import load_experiment
from isoflop.rundir import RECORD_VERSION, RunDir
from isoflop.train import checkpoint
from isoflop.train.run import run_training
from isoflop.train.step import NonFiniteLoss
from tests.conftest import tiny_overrides

DETERMINISTIC = ("step", "loss", "lr", "grad_norm", "tokens", "flops", "val_loss", "val_bpb")


def _metrics(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in DETERMINISTIC if k in r} | {"kind": r["kind"]} for r in records]


def _train(run, corpus, steps=12, extra=()):
    cfg = load_experiment("tiny", tiny_overrides(corpus, steps) + list(extra))
    return run_training(cfg, run, stream=open(os.devnull, "w"))


def test_run_directory_contract(tmp_path, corpus_dir, cache_dir):
    run = tmp_path / "run"
    record = _train(run, corpus_dir, extra=["log.peak_flops=1e11"])
    assert {p.name for p in run.iterdir()} >= {"config.json", "plan.json", "metrics.jsonl", "checkpoints",
                                              "tokenizer", "run.json"}
    assert RunDir(run).checkpoint_steps() == [8, 12]  # keep=2
    metrics = _metrics(run)
    train = [m for m in metrics if m["kind"] == "train"]
    assert [m["step"] for m in train] == list(range(1, 13))
    raw = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][0]
    assert raw["mfu"] == pytest.approx(raw["flops_per_s"] / 1e11) and raw["flops_per_s"] > 0
    assert train[-1]["loss"] < train[0]["loss"]
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [4, 8, 12]
    saved = json.loads((run / "run.json").read_text())
    assert saved == record.to_dict() and saved["version"] == RECORD_VERSION
    for key in ("N_total", "N_active", "N_non_embedding", "D_tokens", "D_bytes", "flops", "val_loss", "val_bpb",
                "wall_time_s"):
        assert key in saved
    assert saved["D_tokens"] == 12 * 8 * 32
    assert "val_loss_causal" not in saved  # a dense model routes nothing
    assert saved["flops"] == saved["D_tokens"] * saved["flops_per_token"]
    # byte tokenizer: bits per byte is the loss in bits, up to end-of-text tokens (0 bytes, still scored)
    assert saved["val_bpb"] == pytest.approx(saved["val_loss"] / 0.6931471805599453, rel=0.05)


MOE_SIGMOID = ["model.ffn.kind=moe", "model.ffn.experts=4", "model.ffn.expert_hidden=32",
               "model.ffn.router.kind=sigmoid_bias", "model.ffn.router.bias_update_rate=0.05"]


@pytest.mark.parametrize("model", [[], MOE_SIGMOID], ids=["dense", "moe_selection_bias"])
def test_resume_is_bit_exact(tmp_path, corpus_dir, cache_dir, model):
    """Also for an MoE whose selection bias (a buffer the optimizer does not hold) moves every step."""
    straight, resumed = tmp_path / "a", tmp_path / "b"
    _train(straight, corpus_dir, extra=model)
    _train(resumed, corpus_dir, extra=["checkpoint.keep=3", *model])
    # As if killed after step 12 was logged but before its checkpoint: the newest checkpoint is step 8 and
    # metrics.jsonl runs past it (resume must drop those records and recompute them identically).
    shutil.rmtree(resumed / "checkpoints" / "step_0000012")
    (resumed / "run.json").unlink()
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir) + ["checkpoint.keep=3", *model])
    with open(os.devnull, "w") as devnull:
        run_training(cfg, resumed, resume=True, stream=devnull)
    assert _metrics(resumed) == _metrics(straight)
    if model:  # the routing itself: per-layer load stats of every step, and the final selection biases
        routing = [[{k: v for k, v in json.loads(line).items() if ".ffn." in k}
                    for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (straight, resumed)]
        assert routing[0] == routing[1] and any(routing[0])
        final = [load_file(str(RunDir(run).latest_checkpoint() / "model.safetensors")) for run in (straight, resumed)]
        biases = [k for k in final[0] if k.endswith("selection_bias")]
        assert biases and all(torch.equal(final[0][k], final[1][k]) for k in biases)


def test_sigkill_at_any_moment_then_resume_matches(tmp_path, corpus_dir, cache_dir):
    reference = tmp_path / "ref"
    _train(reference, corpus_dir, steps=16, extra=["checkpoint.every=2", "eval.every=8"])
    env = {**os.environ, "ISOFLOP_CACHE": str(cache_dir)}
    args = [sys.executable, "-m", "isoflop", "train", "tiny", "--out", str(tmp_path / "k")]
    overrides = [a for o in tiny_overrides(corpus_dir, 16) + ["checkpoint.every=2", "eval.every=8"]
                 for a in ("--set", o)]
    for delay in (0.5, 1.5, 2.5, 3.5):  # kill wherever it happens to be: mid-step, mid-save, mid-eval
        proc = subprocess.Popen(args + overrides + (["--resume"] if (tmp_path / "k" / "config.json").exists() else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (tmp_path / "k" / "checkpoints").exists():
            latest = RunDir(tmp_path / "k").latest_checkpoint()
            if latest is not None:
                checkpoint.load(latest)  # the newest checkpoint is always readable
    final = subprocess.run(args + overrides + (["--resume"] if (tmp_path / "k" / "config.json").exists() else []),
                           env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _metrics(tmp_path / "k") == _metrics(reference)


def test_crash_inside_save_keeps_latest_readable(tmp_path, monkeypatch):
    state = {"w": torch.ones(3)}
    checkpoint.save(RunDir(tmp_path), 1, state, {"s": 1}, {"loader": {}}, keep=2)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save(RunDir(tmp_path), 2, {"w": torch.zeros(3)}, {"s": 2}, {"loader": {}}, keep=2)
    assert RunDir(tmp_path).checkpoint_steps() == [1]
    model_state, _, meta = checkpoint.load(RunDir(tmp_path).latest_checkpoint(), with_optimizer=False)
    assert torch.equal(model_state["w"], torch.ones(3)) and meta["step"] == 1


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path, corpus_dir, cache_dir, monkeypatch):
    import isoflop.train.step as loop

    calls = {"n": 0}
    real = loop.F.cross_entropy

    def poisoned(*a, **k):
        calls["n"] += torch.is_grad_enabled()  # training calls only, not evaluation
        out = real(*a, **k)
        return out * float("nan") if calls["n"] > 2 * 6 else out  # 2 micro-batches per step: NaN at step 7

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLoss) as e:
        _train(tmp_path / "run", corpus_dir)
    assert e.value.step == 7
    assert RunDir(tmp_path / "run").checkpoint_steps() == [4]
    checkpoint.load(RunDir(tmp_path / "run").latest_checkpoint())
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_gloo_equals_one_process(tmp_path, corpus_dir, cache_dir, strategy):
    """Same global batch, same data: per-step losses agree to 1e-5 relative (only the gradient all-reduce's
    summation order differs)."""
    single = tmp_path / "single"
    _train(single, corpus_dir, steps=6, extra=[f"train.parallel={strategy}", "eval.every=0"])
    overrides = [a for o in tiny_overrides(corpus_dir, 6) + [f"train.parallel={strategy}", "eval.every=0"]
                 for a in ("--set", o)]
    env = {**os.environ, "ISOFLOP_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(29500 + os.getpid() % 1000), "-m", "isoflop", "train", "tiny",
                             "--out", str(tmp_path / "ddp"), *overrides], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _metrics(single), _metrics(tmp_path / "ddp")
    assert [m["step"] for m in one] == [m["step"] for m in two]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (a, b)
