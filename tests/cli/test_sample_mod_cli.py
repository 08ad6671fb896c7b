"""Mixture of Depths end to end: the trainer logs routing stats and scores the causal rule; `isoflop sample` and
`isoflop eval --causal-routing` switch to the causal rule, and refuse (exit 2, one line) a MoD run that has none."""

from __future__ import annotations

import json
import os

import pytest

from isoflop.cli import main
from isoflop.cli.common import load_experiment
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides


def _train(run, corpus, steps, extra):
    cfg = load_experiment("tiny", tiny_overrides(corpus, steps) + ["model.mod.kind=topk", *extra])
    with open(os.devnull, "w") as devnull:
        run_training(cfg, run, stream=devnull)
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_trainer_logs_routing_stats_and_sample_uses_the_causal_rule(tmp_path, corpus_dir, cache_dir, capsys):
    run = tmp_path / "mod"
    records = _train(run, corpus_dir, 8, [])
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    last = train[-1]
    # tiny has 2 layers: block 1 is routed; seq_len 32 at capacity 0.125 routes 4 tokens.
    assert last["1.selected_fraction"] == pytest.approx(4 / 32)
    assert 0.0 <= last["1.predictor_accuracy"] <= 1.0 and "1.router_accuracy" in last
    assert last["aux_loss"] > 0  # the predictor's BCE
    # each evaluation also scores the causal rule; different routing, different loss, and the switch is undone
    # (a second evaluation still scores top-k routing first)
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) >= 2 and all(r["val_loss_causal"] != r["val_loss"] for r in evals)
    assert json.loads((run / "run.json").read_text())["val_loss_causal"] == evals[-1]["val_loss_causal"]
    capsys.readouterr()
    for flag, key in (([], "val_loss"), (["--causal-routing"], "val_loss_causal")):  # `eval` agrees with training's
        assert main(["eval", str(run), "--json", *flag]) == 0
        assert json.loads(capsys.readouterr().out)["val_loss"] == pytest.approx(evals[-1][key], rel=1e-6)
    capsys.readouterr()
    args = ["sample", str(run), "--prompt", "def ", "--max-new-tokens", "12", "--temperature", "0"]
    assert main(args) == 0
    cached = capsys.readouterr().out
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == cached and cached.startswith("def ")


def test_sample_refuses_mod_without_a_causal_rule(tmp_path, corpus_dir, cache_dir, capsys):
    run = tmp_path / "mod_no_rule"
    _train(run, corpus_dir, 4, ["model.mod.predictor=false", "model.mod.aux_bce_weight=0"])
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "def ", "--max-new-tokens", "4"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "model.mod has neither a predictor nor aux_bce_weight > 0" in err
    assert main(["eval", str(run), "--causal-routing"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--causal-routing" in err
