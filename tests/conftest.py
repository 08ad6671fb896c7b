"""Shared fixtures: a small synthetic corpus and a tiny config that trains in a second or two."""

from __future__ import annotations

import random

import pytest


def make_corpus(folder, n_docs: int = 40, words_per_doc: int = 400, seed: int = 0):
    """A folder of .txt documents with learnable structure (a small vocabulary of repeated phrases)."""
    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "else", "none", "true"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        text = " ".join(rng.choice(words) for _ in range(words_per_doc))
        (folder / f"doc_{i:03d}.txt").write_text(f"# document {i}\n{text}\n")
    return folder


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("ISOFLOP_CACHE", str(path))
    return path


def tiny_overrides(corpus, steps: int = 12) -> list[str]:
    """--set overrides turning the `tiny` recipe into a seconds-long run on `corpus` with the byte tokenizer."""
    return [
        f"data.corpus={corpus}", "data.tokenizer.kind=byte", "data.seq_len=32", "data.max_bytes=null",
        "data.val_fraction=0.1", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
        f"train.horizon.steps={steps}", "train.batch_size=8", "train.micro_batch_size=4",
        "eval.every=4", "eval.batches=2", "checkpoint.every=4", "checkpoint.keep=2", "log.every=1",
        "optim.lr=0.01",
    ]
