"""The loop's arithmetic: accumulation equals one big batch; bf16 and compile paths run and learn; logged
routing stats cover every micro-batch."""

from __future__ import annotations

import io
import json
import os
from types import SimpleNamespace

import pytest
import torch

from isoflop.cli.common import load_experiment
from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import MoEFFN
from isoflop.train import loop as loop_module
from isoflop.train.hooks import ConsoleProgress
from isoflop.train.loop import LoopCallbacks, train_loop
from isoflop.train.parallel import DistContext
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides


def _losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


def _run(tmp_path, name, corpus, extra):
    cfg = load_experiment("tiny", tiny_overrides(corpus, steps=4) + ["eval.every=0"] + extra)
    with open(os.devnull, "w") as devnull:
        run_training(cfg, tmp_path / name, stream=devnull)
    return _losses(tmp_path / name), torch.load(tmp_path / name / "checkpoints" / "step_0000004" / "optimizer.pt",
                                                weights_only=True)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, corpus_dir, cache_dir):
    """4 micro-batches of 2 vs 1 of 8 sequences: the same mean loss and update, up to float summation order."""
    accumulated, opt_a = _run(tmp_path, "a", corpus_dir, ["train.micro_batch_size=2"])
    whole, opt_b = _run(tmp_path, "b", corpus_dir, ["train.micro_batch_size=8"])
    assert accumulated == pytest.approx(whole, rel=1e-5)
    for key, state in opt_a["state"].items():
        assert torch.allclose(state["exp_avg"], opt_b["state"][key]["exp_avg"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("extra", [["train.precision=bf16"], ["train.compile=true"]])
def test_bf16_and_compile_train(tmp_path, corpus_dir, cache_dir, extra):
    losses, _ = _run(tmp_path, "r", corpus_dir, extra)
    reference, _ = _run(tmp_path, "fp32", corpus_dir, [])
    assert all(torch.isfinite(torch.tensor(losses)))
    tolerance = 0.05 if "bf16" in extra[0] else 1e-4  # bf16 rounds activations; compile only reorders fp32 math
    assert losses == pytest.approx(reference, rel=tolerance)


def test_progress_line_has_step_loss_throughput_and_eta():
    stream = io.StringIO()
    progress = ConsoleProgress(100, stream)
    progress.step({"step": 10, "loss": 2.5, "lr": 1e-3, "tokens": 10_000, "tokens_per_s": 1000.0})
    line = stream.getvalue()
    assert " 10/100" in line and "loss 2.5000" in line and "1.0k tok/s" in line
    assert "ETA 1:30" in line  # 90 steps of 1000 tokens at 1000 tokens/s


def test_logged_routing_stats_average_the_micro_batches():
    """With two micro-batches the record holds the mean of their stats, not the last one's."""
    torch.manual_seed(0)
    model = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, ffn_hidden=48,
                        ffn=MoEFFN(experts=4, top_k=1)).build()
    inputs_BT, targets_BT = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    per_micro = []
    for half_BT in inputs_BT.chunk(2):  # what the loop's two forwards see, before its (lr 0) update
        model(half_BT)
        per_micro.append(model.routing_stats())
    assert per_micro[0] != per_micro[1]  # else the mean and the last micro-batch could not be told apart
    records: list[dict] = []
    train_loop(model, torch.optim.SGD(model.parameters(), lr=0.0),
               SimpleNamespace(steps=1, grad_accum=2, tokens_per_step=64, flops_per_token=1),  # type: ignore[arg-type]
               start_step=0, grad_clip=None, precision="fp32", ctx=DistContext(0, 1, 0, torch.device("cpu")),
               callbacks=LoopCallbacks(next_batch=lambda: (inputs_BT, targets_BT), lr_at=lambda step: 0.0,
                                       on_step=records.append, after_step=lambda done, training_s: None))
    for key in per_micro[0]:
        assert records[0][key] == pytest.approx((per_micro[0][key] + per_micro[1][key]) / 2, rel=1e-6), key


def test_evaluation_and_checkpoint_time_is_not_training_time(monkeypatch):
    """A fake clock: each batch takes 1 s and each after_step (evaluation, checkpoint) 100 s. elapsed_s, the
    throughput and the seconds handed to after_step (what a checkpoint keeps) count the batches only."""
    clock = [0.0]
    monkeypatch.setattr(loop_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    model = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, ffn_hidden=48).build()
    inputs_BT = torch.randint(0, 64, (2, 8))

    def next_batch():
        clock[0] += 1.0
        return inputs_BT, inputs_BT

    def after_step(done: int, training_s: float) -> None:
        handed.append(training_s)
        clock[0] += 100.0

    records: list[dict] = []
    handed: list[float] = []
    train_loop(model, torch.optim.SGD(model.parameters(), lr=0.0),
               SimpleNamespace(steps=3, grad_accum=1, tokens_per_step=16, flops_per_token=1),  # type: ignore[arg-type]
               start_step=0, grad_clip=None, precision="fp32", ctx=DistContext(0, 1, 0, torch.device("cpu")),
               callbacks=LoopCallbacks(next_batch=next_batch, lr_at=lambda step: 0.0, on_step=records.append,
                                       after_step=after_step), log_every=2)
    assert [r["elapsed_s"] for r in records] == [2.0, 3.0]  # logged at step 2 and at the last step
    assert [r["tokens_per_s"] for r in records] == [16.0, 16.0]
    assert handed == [1.0, 2.0, 3.0]
