"""studies: the studies' runs are small changes of one baseline, and their measurements agree with an
independent computation on a tiny trained run."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from isoflop.config import ConfigError, apply_overrides
from isoflop.recipes.baseline import tiny
from isoflop.studies import get_study, study_names
from isoflop.studies.cosine_stretch import STRETCHES
from isoflop.studies.rope_extrapolation import _kinds, measure_lengths
from isoflop.studies.sign_optimizer_embeddings import (
    RARE_BYTE,
    VAL_FRACTION,
    rare_row_trace,
    write_corpus,
)
from isoflop.train.spec import ExperimentConfig
from tests.conftest import make_corpus, tiny_overrides


def test_registry_and_unknown_names(tmp_path):
    assert set(study_names()) == {"rope-extrapolation", "sign-optimizer-embeddings", "cosine-stretch",
                                  "compressed-text", "sparse-isoflop", "isoflop-sweep"}
    assert all(study_names().values())
    with pytest.raises(ConfigError, match="did you mean 'cosine-stretch'"):
        get_study("cosine-strech")


def _without(d: dict, *path: str) -> dict:
    d = json.loads(json.dumps(d))
    node = d
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1])
    return d


@pytest.mark.parametrize("smoke", [True, False])
def test_cosine_runs_differ_only_in_stretch(tmp_path, smoke):
    runs = get_study("cosine-stretch").runs(tmp_path, smoke=smoke)
    assert [c.schedule.stretch for c in runs.values()] == list(STRETCHES)
    rest = [_without(c.to_dict(), "schedule", "stretch") for c in runs.values()]
    assert all(r == rest[0] for r in rest) and all(c.schedule.kind == "cosine" for c in runs.values())


@pytest.mark.parametrize("smoke", [True, False])
def test_sparse_runs_spend_the_dense_runs_training_flops(tmp_path, smoke):
    from isoflop.nn.counting import flops_per_token
    from isoflop.recipes import get_recipe

    runs = get_study("sparse-isoflop").runs(tmp_path, smoke=smoke)
    assert list(runs) == ["dense", "moe", "mod", "mode"]

    def per_step(cfg):  # recounted here: tokens a step times the config's training FLOPs a token
        return cfg.train.batch_size * cfg.data.seq_len * flops_per_token(cfg.resolved_model, cfg.data.seq_len).training

    budget = runs["dense"].train.horizon.steps * per_step(runs["dense"])
    for cfg in runs.values():  # each within half a step of the dense run's FLOPs
        assert abs(cfg.train.horizon.steps * per_step(cfg) - budget) <= per_step(cfg) / 2
    assert runs["mod"].train.horizon.steps > 1.4 * runs["dense"].train.horizon.steps  # MoD is cheaper a token
    if not smoke:  # otherwise the recipes themselves: only the length, evaluations and checkpoints differ
        assert runs["dense"].train.horizon.steps == 720
        for name, recipe in {"dense": "tiny", "moe": "moe-tiny", "mod": "mod-tiny", "mode": "mode-tiny"}.items():
            ours, theirs = runs[name].to_dict(), get_recipe(recipe).to_dict()
            for d in (ours, theirs):
                d["train"]["horizon"].pop("steps"), d.pop("eval"), d.pop("checkpoint")
            assert ours == theirs


def test_sign_runs_reach_their_fixed_point_within_the_run(tmp_path):
    runs = get_study("sign-optimizer-embeddings").runs(tmp_path, smoke=False)
    assert set(runs) >= {"lion", "lion_lazy", "lion_adamw_emb", "lion_tied", "tiger", "tiger_lazy",
                         "tiger_adamw_emb", "tiger_tied", "adamw"}
    for name, cfg in runs.items():
        assert cfg.model.tie_embeddings == name.endswith("_tied")
        if cfg.optim.kind != "adamw":
            # the approach to ±1/λ takes ~1/(ηλ) steps: the run must be at least twice that long
            assert cfg.train.horizon.steps >= 2 / (cfg.optim.lr * cfg.optim.weight_decay)
            assert cfg.optim.embeddings == {"lazy": "lazy", "adamw": "adamw"}.get((name.split("_") + [""])[1], "sign")
            assert cfg.schedule.kind == "constant"  # a decaying lr would stall the drift


def test_generated_corpus_has_the_rare_byte_once_early_in_a_training_document(tmp_path):
    from isoflop.data.shards import is_val_document

    folder = write_corpus(tmp_path / "c", n_docs=12, doc_bytes=500)
    hits = [(i, p.read_bytes().index(RARE_BYTE)) for i, p in enumerate(sorted(folder.iterdir()))
            if RARE_BYTE in p.read_bytes()]
    assert len(hits) == 1
    (doc, offset), = hits
    assert offset < 40 and not is_val_document(doc, VAL_FRACTION)
    assert sum(p.read_bytes().count(RARE_BYTE) for p in folder.iterdir()) == 1
    assert write_corpus(tmp_path / "d", n_docs=12, doc_bytes=500) and all(  # deterministic
        (tmp_path / "c" / p.name).read_bytes() == p.read_bytes() for p in (tmp_path / "d").iterdir())


def test_every_rope_kind_builds_at_every_length():
    base = tiny().to_dict()
    for label, at in _kinds(128).items():
        for length in (128, 256, 2048):
            cfg = ExperimentConfig.from_dict(apply_overrides(base, at(length), ExperimentConfig))
            factor = getattr(cfg.model.rope, "factor", None)
            if factor is not None and cfg.model.rope.kind != "dynamic":
                assert factor == length / 128, label


# --- measurements against an independent computation, on one tiny trained run ---------------------------------


@pytest.fixture(scope="module")
def lion_run(tmp_path_factory):
    from isoflop.train.run import run_training

    root = tmp_path_factory.mktemp("study_run")
    corpus = make_corpus(root / "corpus", n_docs=12, words_per_doc=150)
    overrides = tiny_overrides(corpus, steps=6) + [
        f"data.cache_dir={root / 'cache'}", "optim.kind=lion", "optim.weight_decay=0.1", "checkpoint.every=2",
        "checkpoint.keep=10", "eval.every=0", "model.tie_embeddings=false"]
    cfg = ExperimentConfig.from_dict(apply_overrides(tiny().to_dict(), overrides, ExperimentConfig))
    run_training(cfg, root / "run", stream=io.StringIO())
    return root / "run"


def test_rare_row_trace_matches_safetensors(lion_run):
    token = ord("e")
    trace = rare_row_trace(lion_run, token)
    assert [t["step"] for t in trace] == [2, 4, 6]
    for t in trace:
        weights = load_file(str(lion_run / "checkpoints" / f"step_{t['step']:07d}" / "model.safetensors"))
        row = np.abs(weights["embed.weight"][token].astype(np.float64))
        assert t["max_abs"] == pytest.approx(row.max(), rel=1e-6)
        assert t["mean_abs"] == pytest.approx(row.mean(), rel=1e-6)
    assert trace[0]["max_abs"] != trace[-1]["max_abs"]  # the weights did move between checkpoints


def test_rope_eval_at_the_training_length_equals_isoflop_eval(lion_run, capsys):
    from isoflop.cli import main

    kinds = _kinds(32)
    records = measure_lengths(lion_run, kinds, [32, 64], n_batches=2)
    assert main(["eval", str(lion_run), "--json", "--batches", "2"]) == 0
    reference = json.loads(capsys.readouterr().out)
    at_train = {r["kind"]: r["val_loss"] for r in records if r["seq_len"] == 32}
    assert at_train["default"] == pytest.approx(reference["val_loss"], rel=1e-6)
    for label, loss in at_train.items():  # s = 1 and log n = 1 up to the training length: plain RoPE exactly
        if "rerope" not in label:
            assert loss == pytest.approx(reference["val_loss"], rel=1e-5), label
    longer = {r["kind"]: r["val_loss"] for r in records if r["seq_len"] == 64}
    assert longer["linear (PI)"] != longer["default"] and all(math.isfinite(v) for v in longer.values())
    assert {r["val_tokens"] for r in records} == {2 * 4 * 32}  # every length scores the same number of tokens
