"""One optimizer step: accumulation equals one big batch; bf16 and compile paths run and learn; logged routing
stats cover every micro-batch."""

from __future__ import annotations

import os

import pytest
import torch

from isoflop.cli.common import load_experiment
from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import MoEFFN
from isoflop.rundir import RunDir
from isoflop.train.parallel import DistContext
from isoflop.train.run import run_training
from isoflop.train.step import OptimizerStep
from tests.conftest import tiny_overrides

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _run(tmp_path, name, corpus, extra):
    cfg = load_experiment("tiny", tiny_overrides(corpus, steps=4) + ["eval.every=0"] + extra)
    with open(os.devnull, "w") as devnull:
        run_training(cfg, tmp_path / name, stream=devnull)
    run = RunDir(tmp_path / name)
    losses = [r["loss"] for r in run.metrics.train_records()]
    return losses, torch.load(run.step_dir(4) / "optimizer.pt", weights_only=True)


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


def test_logged_routing_stats_average_the_micro_batches():
    """With two micro-batches the record holds the mean of their stats, not the last one's."""
    torch.manual_seed(0)
    model = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, ffn_hidden=48,
                        ffn=MoEFFN(experts=4, top_k=1)).build()
    inputs_BT, targets_BT = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    per_micro = []
    for half_BT in inputs_BT.chunk(2):  # what the step's two forwards see, before its (lr 0) update
        model(half_BT)
        per_micro.append(model.routing_stats())
    assert per_micro[0] != per_micro[1]  # else the mean and the last micro-batch could not be told apart
    step = OptimizerStep(model, torch.optim.SGD(model.parameters(), lr=0.0), grad_accum=2, grad_clip=None,
                         precision="fp32", ctx=CPU)
    result = step(inputs_BT, targets_BT, 0.0, log=True)
    for key in per_micro[0]:
        assert result.logged[key] == pytest.approx((per_micro[0][key] + per_micro[1][key]) / 2, rel=1e-6), key
    assert step(inputs_BT, targets_BT, 0.0, log=False).logged == {}  # stats are gathered on logged steps only
