"""Sparse upcycling: function preservation at step 0 (and its exact scaling without renormalisation), bitwise
parameter mapping, the logged router seed, optimizer reuse with a continued schedule, and that
`isoflop train DIR --resume` trains the result."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from isoflop.cli import main
from isoflop.cli.common import load_experiment
from isoflop.rundir import RunDir
from isoflop.train import checkpoint
from isoflop.train.artifacts import load_config, load_model
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("dense")
    mp = pytest.MonkeyPatch()
    mp.setenv("ISOFLOP_CACHE", str(root / "cache"))
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, 8) + ["model.n_layers=4"])
    run_training(cfg, root / "run", stream=open("/dev/null", "w"))
    yield root / "run"
    mp.undo()


def _logits(run, tokens_BT):
    model = load_model(run).eval()
    with torch.no_grad():
        return model(tokens_BT)


def test_step0_logits_equal_dense_and_tensors_are_copies(dense_run, tmp_path):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(out), "--experts", "4", "--top-k", "2"]) == 0
    tokens_BT = torch.randint(0, 257, (3, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(out, tokens_BT), _logits(dense_run, tokens_BT), atol=1e-5, rtol=0)

    dense = load_file(str(RunDir(dense_run).latest_checkpoint() / "model.safetensors"))
    moe = load_file(str(RunDir(out).latest_checkpoint() / "model.safetensors"))
    record = json.loads((out / "upcycle.json").read_text())
    assert record["converted_layers"] == [1, 3]  # every other block, (i + 1) % 2 == 0
    for name, tensor in dense.items():
        if name in moe:
            assert torch.equal(moe[name], tensor), name  # attention, norms, embeddings, untouched MLPs
    for layer in (1, 3):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            experts = moe[f"layers.{layer}.ffn.experts.{proj}"]
            assert experts.shape[0] == 4
            for e in range(4):
                assert torch.equal(experts[e], dense[f"layers.{layer}.ffn.{proj}.weight"])
    assert f"layers.{1}.ffn.gate.weight" in moe  # a fresh router
    assert json.loads((out / "config.json").read_text())["model"]["ffn"]["kind"] == "moe"


def test_reuse_optimizer_copies_moments_and_continues_step(dense_run, tmp_path):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(out), "--experts", "3", "--top-k", "1",
                 "--reuse-optimizer", "--steps", "4"]) == 0
    _, dense_optim, dense_state = checkpoint.load(RunDir(dense_run).latest_checkpoint())
    path = RunDir(out).latest_checkpoint()
    _, optim, state = checkpoint.load(path)
    assert state["step"] == dense_state["step"] == 8
    source = dense_optim["state"]["layers.1.ffn.up_proj.weight"]
    target = optim["state"]["layers.1.ffn.experts.up_proj"]
    for key in ("exp_avg", "exp_avg_sq"):
        for e in range(3):
            assert torch.equal(target[key][e], source[key])
    assert torch.equal(torch.as_tensor(target["step"]), torch.as_tensor(source["step"]))
    router = optim["state"]["layers.1.ffn.gate.weight"]
    assert not router["exp_avg"].any()

    assert main(["train", str(out), "--resume"]) == 0  # trains steps 8..12
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == 12
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [x["step"] for x in lines if x["kind"] == "train"]
    assert train_steps[0] == 9 and train_steps[-1] == 12
    assert "aux_loss" in lines[0]
    cfg = load_config(out)  # the lr of step s (completed count) is the schedule's at 0-based index s - 1
    first = next(x for x in lines if x["kind"] == "train")
    assert first["lr"] == pytest.approx(cfg.optim.lr * cfg.schedule.multiplier(first["step"] - 1, 12), rel=1e-12)
    assert first["lr"] != pytest.approx(cfg.optim.lr * cfg.schedule.multiplier(0, 4))  # not a fresh schedule


def test_fresh_optimizer_path_trains_from_step_zero(dense_run, tmp_path):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(out), "--experts", "2", "--top-k", "1",
                 "--steps", "3", "--noise", "0.001", "--seed", "5"]) == 0
    _, optim, state = checkpoint.load(RunDir(out).latest_checkpoint())
    assert state["step"] == 0 and optim is None
    dense_state = checkpoint.load(RunDir(dense_run).latest_checkpoint(), with_optimizer=False)[2]
    assert state["loader"]["next_batch"] == dense_state["loader"]["next_batch"]  # new data, not a replay
    moe = load_file(str(RunDir(out).latest_checkpoint() / "model.safetensors"))
    experts = moe["layers.1.ffn.experts.gate_proj"]
    assert not torch.equal(experts[0], experts[1])  # noise breaks the symmetry
    assert main(["train", str(out), "--resume"]) == 0
    assert json.loads((out / "run.json").read_text())["steps"] == 3


def test_training_breaks_the_copies_symmetry_without_noise(dense_run, tmp_path):
    """Without --noise the experts start as exact copies, but the fresh router sends them different tokens, so
    one step of training makes them differ: identical copies must not stay identical (Komatsuzaki et al. 2023)."""
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(out), "--experts", "2", "--top-k", "1",
                 "--steps", "1"]) == 0
    start = load_file(str(RunDir(out).latest_checkpoint() / "model.safetensors"))["layers.1.ffn.experts.gate_proj"]
    assert torch.equal(start[0], start[1])
    assert main(["train", str(out), "--resume"]) == 0
    trained = load_file(str(RunDir(out).latest_checkpoint() / "model.safetensors"))["layers.1.ffn.experts.gate_proj"]
    assert not torch.equal(trained[0], trained[1])


def test_no_renormalize_scales_each_moe_layer_by_its_top_k_mass(dense_run, tmp_path):
    """Raw top-k softmax gates: each MoE layer gives (sum of the token's top-k probabilities) x the dense MLP."""
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(out), "--experts", "4", "--top-k", "2",
                 "--no-renormalize"]) == 0
    assert json.loads((out / "upcycle.json").read_text())["router"]["renormalize"] is False
    dense, moe = load_model(dense_run), load_model(out)
    seen = {}
    for layer in (1, 3):
        moe.layers[layer].ffn.register_forward_hook(
            lambda module, args, output, layer=layer: seen.__setitem__(layer, (args[0], output)))
    tokens_BT = torch.randint(0, 257, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(moe(tokens_BT), dense(tokens_BT), atol=1e-3)  # not the dense model
        for layer in (1, 3):
            x_BTD, y_BTD = seen[layer]
            probs_BTE = (x_BTD @ moe.layers[layer].ffn.gate.weight.T).softmax(dim=-1)
            mass_BT1 = probs_BTE.topk(2, dim=-1).values.sum(dim=-1, keepdim=True)
            assert mass_BT1.max() < 0.99  # the scaling is visible
            torch.testing.assert_close(y_BTD, mass_BT1 * dense.layers[layer].ffn(x_BTD), atol=1e-5, rtol=0)


def test_router_seed_is_recorded_and_determines_the_router(dense_run, tmp_path):
    """The same --seed gives bitwise-equal routers, another seed different ones; upcycle.json logs it."""
    gates = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / name
        assert main(["upcycle", str(dense_run), "--out", str(out), "--experts", "2", "--top-k", "1",
                     "--seed", str(seed)]) == 0
        assert json.loads((out / "upcycle.json").read_text())["router_seed"] == seed
        moe = load_file(str(RunDir(out).latest_checkpoint() / "model.safetensors"))
        gates[name] = [moe[f"layers.{layer}.ffn.gate.weight"] for layer in (1, 3)]
    for a, b, c in zip(gates["a"], gates["b"], gates["c"], strict=True):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


@pytest.mark.parametrize("args, needle", [
    (["--experts", "2", "--top-k", "3"], "--top-k"),
    (["--experts", "2", "--top-k", "1", "--router", "nope"], "--router"),
    (["--experts", "2", "--top-k", "1", "--noise", "-1"], "--noise"),
])
def test_bad_input_exits_2_with_one_line(dense_run, tmp_path, capsys, args, needle):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


def test_refuses_a_run_that_is_already_moe(dense_run, tmp_path, capsys):
    first = tmp_path / "moe"
    assert main(["upcycle", str(dense_run), "--out", str(first), "--experts", "2", "--top-k", "1"]) == 0
    assert main(["upcycle", str(first), "--out", str(tmp_path / "again"), "--experts", "2", "--top-k", "1"]) == 2
    assert "dense" in capsys.readouterr().err
