"""`isoflop sample` on MoE runs: dropless token choice samples (cached equals uncached); the modes that look at
other tokens of the batch, expert choice and capacity dropping, are refused with exit 2 and one line."""

from __future__ import annotations

import os

import pytest

from isoflop.cli import main
from isoflop.cli.common import load_experiment
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides

MOE = ["model.ffn.kind=moe", "model.ffn.experts=4", "model.ffn.expert_hidden=32"]


def _train(run, corpus, extra) -> None:
    cfg = load_experiment("tiny", [*tiny_overrides(corpus, 2), "eval.every=0", *MOE, *extra])
    with open(os.devnull, "w") as devnull:
        run_training(cfg, run, stream=devnull)


def test_dropless_moe_samples_and_cache_changes_nothing(tmp_path, corpus_dir, cache_dir, capsys):
    _train(tmp_path / "moe", corpus_dir, ["model.ffn.top_k=2"])
    capsys.readouterr()
    args = ["sample", str(tmp_path / "moe"), "--prompt", "def ", "--max-new-tokens", "12", "--temperature", "0"]
    assert main(args) == 0
    cached = capsys.readouterr().out
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == cached and cached.startswith("def ")


@pytest.mark.parametrize("extra, needle", [
    (["model.ffn.router.kind=expert_choice"], "expert-choice"),
    (["model.ffn.top_k=1", "model.ffn.capacity_factor=1.0"], "capacity_factor"),
], ids=["expert_choice", "capacity_factor"])
def test_sample_refuses_non_causal_moe(tmp_path, corpus_dir, cache_dir, capsys, extra, needle):
    _train(tmp_path / "moe", corpus_dir, extra)
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "moe"), "--prompt", "def ", "--max-new-tokens", "4"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and needle in err
