"""Lifelong expansion: outputs unchanged before training, frozen experts really frozen, the distillation term,
and the old data's validation loss tracked through the new phase."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from isoflop.cli import main
from isoflop.cli.common import load_experiment
from isoflop.rundir import RunDir
from isoflop.train.artifacts import load_model
from isoflop.train.distill import kl_to_teacher
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides

MOE = ["model.ffn.kind=moe", "model.ffn.experts=4", "model.ffn.top_k=2", "model.ffn.expert_hidden=32"]


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("moe")
    mp = pytest.MonkeyPatch()
    mp.setenv("ISOFLOP_CACHE", str(root / "cache"))
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, 6) + MOE)
    run_training(cfg, root / "run", stream=open("/dev/null", "w"))
    yield root / "run"
    mp.undo()


@pytest.fixture(scope="module")
def new_corpus(tmp_path_factory):
    """Different text from the conftest corpus: other words, so the old and new validation losses differ."""
    folder = tmp_path_factory.mktemp("new_corpus")
    rng = random.Random(7)
    words = ["while", "yield", "lambda", "async", "await", "raise", "try", "except", "with", "as"]
    for i in range(30):
        (folder / f"new_{i:03d}.txt").write_text(" ".join(rng.choice(words) for _ in range(400)) + "\n")
    return folder


def _expand(moe_run, out, new_corpus, *extra):
    return main(["expand", str(moe_run), "--out", str(out), "--new-experts", "2", "--steps", "4",
                 "--set", f"data.corpus={new_corpus}", *extra])


def test_outputs_unchanged_before_training_and_new_experts_unselected(moe_run, tmp_path, new_corpus, cache_dir):
    out = tmp_path / "expanded"
    assert _expand(moe_run, out, new_corpus, "--freeze-old") == 0
    old, new = load_model(moe_run).eval(), load_model(out).eval()
    tokens_BT = torch.randint(0, 257, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(new(tokens_BT), old(tokens_BT), atol=1e-5, rtol=0)
    for layer in new.layers:
        ffn = layer.ffn
        assert ffn.cfg.experts == 6 and ffn.cfg.frozen_experts == 4
        assert torch.equal(ffn.selection_bias, torch.tensor([0.0, 0, 0, 0, -1, -1]))
        assert not ffn.gate.weight[-2:].any()  # zero router rows for the new experts
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eval"]["also"] == [cfg_old_corpus(moe_run)]
    assert cfg["data"]["tokenizer"]["path"] == str((moe_run / "tokenizer").resolve())


def cfg_old_corpus(run):
    return json.loads((run / "config.json").read_text())["data"]["corpus"]


def test_training_keeps_frozen_experts_bitwise_and_tracks_old_data(moe_run, tmp_path, new_corpus, cache_dir):
    out = tmp_path / "expanded"
    assert _expand(moe_run, out, new_corpus, "--freeze-old", "--distill", "0.5") == 0
    before = load_file(str(RunDir(moe_run).latest_checkpoint() / "model.safetensors"))
    assert main(["train", str(out), "--resume"]) == 0
    after = load_file(str(RunDir(out).latest_checkpoint() / "model.safetensors"))
    for layer in (0, 1):
        ffn = f"layers.{layer}.ffn."
        assert torch.equal(after[ffn + "gate_frozen"], before[ffn + "gate.weight"])
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert torch.equal(after[ffn + f"experts_frozen.{proj}"], before[ffn + f"experts.{proj}"])
        bias = after[ffn + "selection_bias"]
        assert torch.equal(bias[:4], torch.zeros(4))  # frozen experts' biases never move
        assert (bias[4:] > -1).all() and (bias[4:] <= -1 + 4 * 1e-2 + 1e-6).all()  # rose by rate per step
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    name = f"val_loss@{new_corpus.name}"
    old_name = "val_loss@" + cfg_old_corpus(moe_run).rstrip("/").split("/")[-1]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and all(old_name in r for r in evals) and name not in evals[0]
    trains = [r for r in records if r["kind"] == "train"]
    assert trains[0]["extra_loss"] < 1e-6  # the student starts equal to its teacher: KL is zero
    assert trains[-1]["extra_loss"] > trains[0]["extra_loss"]


def test_without_distillation_the_loss_is_the_lm_loss(moe_run, tmp_path, new_corpus, cache_dir):
    out = tmp_path / "expanded"
    assert _expand(moe_run, out, new_corpus) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["distill"] == {"teacher": None, "weight": 0.0} and cfg["model"]["ffn"]["frozen_experts"] == 0
    assert main(["train", str(out), "--resume"]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("extra_loss" not in r for r in records)


def test_kl_to_teacher_is_zero_for_the_same_model_and_positive_otherwise():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    assert kl_to_teacher(logits, logits).item() == 0.0
    other = logits + torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(1))
    p, q = logits.softmax(-1), other.softmax(-1)
    reference = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(kl_to_teacher(logits, other), reference)


@pytest.mark.parametrize("args, needle", [
    (["--new-experts", "0"], "--new-experts"),
    (["--new-experts", "2", "--distill", "-1"], "--distill"),
    (["--new-experts", "2", "--set", "data.nope=1"], "data.nope"),
])
def test_bad_input_exits_2_with_one_line(moe_run, tmp_path, capsys, args, needle):
    out = tmp_path / "x"
    assert main(["expand", str(moe_run), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


def test_refuses_a_dense_run(tmp_path, corpus_dir, cache_dir, capsys):
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, 2))
    run_training(cfg, tmp_path / "dense", stream=open("/dev/null", "w"))
    assert main(["expand", str(tmp_path / "dense"), "--out", str(tmp_path / "x"), "--new-experts", "1"]) == 2
    assert "upcycle" in capsys.readouterr().err


def _with_biases(run, out, biases):
    """A copy of `run` whose every MoE layer's selection bias is `biases`: biases as training would move them."""
    from isoflop.surgery.run_io import read_run, write_run

    cfg, state, _, st = read_run(run)
    for name in [k for k in state if k.endswith("ffn.selection_bias")]:
        state[name] = torch.tensor(biases, dtype=state[name].dtype)
    write_run(out, cfg, tokenizer_dir=RunDir(run).tokenizer_dir, step=st["step"], model_state=state,
              optim_state=None, loader_state=st["loader"], surgery="expand", record={})
    return out


def _same_logits(old_run, new_run):
    old, new = load_model(old_run).eval(), load_model(new_run).eval()
    tokens_BT = torch.randint(0, 257, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(new(tokens_BT), old(tokens_BT), atol=1e-5, rtol=0)


def test_sigmoid_router_with_moved_biases_keeps_outputs(tmp_path, corpus_dir, new_corpus, cache_dir, capsys):
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, 2) + MOE + ["model.ffn.router.kind=sigmoid_bias"])
    run_training(cfg, tmp_path / "sigmoid", stream=open("/dev/null", "w"))
    # old experts below -1: a new expert entering at a fixed -1 (score 0.5 - 1) would be every token's second pick
    moved = _with_biases(tmp_path / "sigmoid", tmp_path / "moved", [-1.5, -1.2, -1.8, 0.0])
    assert _expand(moved, tmp_path / "expanded", new_corpus) == 0
    assert _same_logits(moved, tmp_path / "expanded")
    record = json.loads((tmp_path / "expanded" / "expand.json").read_text())
    assert list(record["entry_bias"].values()) == pytest.approx([-2.8, -2.8]) and not record["softmax_order_may_change"]
    assert "note:" not in capsys.readouterr().err


def test_softmax_second_expansion_keeps_outputs_or_says_it_may_not(moe_run, tmp_path, new_corpus, cache_dir,
                                                                  capsys):
    first = tmp_path / "first"
    assert _expand(moe_run, first, new_corpus) == 0  # biases [0, 0, 0, 0, -1, -1]: a gap of 1, no swap possible
    assert _expand(first, tmp_path / "second", new_corpus) == 0
    assert _same_logits(first, tmp_path / "second") and "note:" not in capsys.readouterr().err
    assert json.loads((tmp_path / "second" / "expand.json").read_text())["entry_bias"]["layers.0"] == -2.0
    moved = _with_biases(first, tmp_path / "moved", [0.0, 0.0, 0.0, 0.0, -0.3, -0.5])  # new experts rose
    assert _expand(moved, tmp_path / "third", new_corpus) == 0
    assert json.loads((tmp_path / "third" / "expand.json").read_text())["softmax_order_may_change"]
    assert "note: the old experts' selection biases differ" in capsys.readouterr().err


@pytest.mark.parametrize("router, needle", [
    (["model.ffn.router.kind=expert_choice"], "model.ffn.router.kind: expert-choice routing lets experts pick"),
    (["model.ffn.router.renormalize=false"], "model.ffn.router.renormalize: un-renormalised softmax gates"),
])
def test_routers_that_cannot_keep_new_experts_out_are_refused(tmp_path, corpus_dir, cache_dir, capsys, router,
                                                               needle):
    """The router kind answers whether it can keep new experts out (RouterConfig.entering): expert choice has no
    selection bias, and un-renormalised softmax gates would change with the new rows."""
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, 2) + MOE + router)
    run_training(cfg, tmp_path / "src", stream=open("/dev/null", "w"))
    capsys.readouterr()
    assert main(["expand", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--new-experts", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and needle in err and not (tmp_path / "x").exists()
