"""Token shards: counts, the split by document, the cache (reuse, atomicity, races) and its errors."""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

import numpy as np
import pytest

from isoflop.config import ConfigError
from isoflop.data import shards
from isoflop.data.config import BPETokenizerConfig, ByteTokenizerConfig, DataConfig
from isoflop.data.corpus import iter_documents
from isoflop.data.shards import PreparedData, is_val_document, prepare_shards
from isoflop.data.tokenizers.bpe import BPETokenizer

WORDS = "the model of data and a compute token budget scaling law to in is for loss".split()


def make_corpus(root: Path, n_docs: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        text = " ".join(rng.choices(WORDS, k=rng.randint(20, 120))).encode()
        if i % 17 == 5:
            text += b" \xff\x00\xc3 caf\xc3\xa9 \xef\x9e\x80"  # invalid UTF-8, NUL, a genuine U+F780
        (root / f"doc{i:03d}.txt").write_bytes(text)
    return root


def data_cfg(tmp_path: Path, **kw) -> DataConfig:
    if "corpus" not in kw:
        kw["corpus"] = str(make_corpus(tmp_path / "corpus"))
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("val_fraction", 0.2)
    kw.setdefault("seq_len", 16)
    return DataConfig(**kw)


def split_documents(data: PreparedData, split: str) -> list[bytes]:
    """The documents of a split, recovered by cutting its tokens at end-of-text."""
    tokens = np.asarray(data.tokens(split), dtype=np.int64)
    assert len(tokens) == 0 or tokens[-1] == data.tokenizer.eot_id
    ends = np.flatnonzero(tokens == data.tokenizer.eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [data.tokenizer.decode(tokens[s:e]) for s, e in zip(starts, ends, strict=True)]


@pytest.mark.parametrize("tokenizer", [ByteTokenizerConfig(), BPETokenizerConfig(vocab_size=400)])
def test_meta_counts_and_split_by_document(tmp_path: Path, tokenizer) -> None:
    cfg = data_cfg(tmp_path, tokenizer=tokenizer)
    messages: list[str] = []
    data = prepare_shards(cfg, progress=messages.append)
    assert messages and any("tokenizing" in m for m in messages)
    docs = list(iter_documents(cfg))
    val_docs = [d for i, d in enumerate(docs) if is_val_document(i, cfg.val_fraction)]
    train_docs = [d for i, d in enumerate(docs) if not is_val_document(i, cfg.val_fraction)]
    assert val_docs and train_docs  # the hash put documents on both sides of this corpus
    assert split_documents(data, "train") == train_docs
    assert split_documents(data, "val") == val_docs
    meta = data.meta
    assert meta["dtype"] == "uint16" and data.tokens("train").dtype == np.uint16
    assert meta["n_documents"] == len(docs)
    for split, split_docs in (("train", train_docs), ("val", val_docs)):
        counts = meta["splits"][split]
        assert counts["n_tokens"] == len(data.tokens(split)) == data.n_tokens(split)
        assert counts["n_documents"] == len(split_docs)
        assert counts["n_bytes"] == sum(map(len, split_docs)) == data.n_bytes(split)
        tokens = np.asarray(data.tokens(split), dtype=np.int64)
        assert data.tokenizer.token_byte_lengths()[tokens].sum() == counts["n_bytes"]
    assert meta["tokenizer"]["kind"] == tokenizer.kind
    assert meta["tokenizer"]["fingerprint"] == data.tokenizer.fingerprint()
    assert data.directory.parent == tmp_path / "cache" / "shards"
    assert sorted(p.name for p in data.directory.iterdir()) == ["meta.json", "tokenizer", "train.bin", "val.bin"]


def test_bpe_is_trained_on_training_documents_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    original = BPETokenizer.train.__func__

    def spy(cls, docs, **kw):
        def recording():
            for d in docs:
                seen.append(d)
                yield d
        return original(cls, recording(), **kw)

    monkeypatch.setattr(BPETokenizer, "train", classmethod(spy))
    cfg = data_cfg(tmp_path, tokenizer=BPETokenizerConfig(vocab_size=400, train_bytes=3000))
    data = prepare_shards(cfg)
    val_docs = set(split_documents(data, "val"))
    assert seen and not val_docs & set(seen)
    assert sum(map(len, seen[:-1])) < 3000  # the lazy corpus was read only as far as train_bytes


def test_second_prepare_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = data_cfg(tmp_path)
    first = prepare_shards(cfg)
    stat = (first.directory / "train.bin").stat()
    monkeypatch.setattr(shards, "_build", lambda *a, **k: pytest.fail("rebuilt a cached entry"))
    messages: list[str] = []
    second = prepare_shards(cfg, progress=messages.append)
    assert second.directory == first.directory and second.meta == first.meta
    assert (second.directory / "train.bin").stat().st_mtime_ns == stat.st_mtime_ns
    assert any("cached" in m for m in messages)
    # seq_len does not change the tokens, so it shares the entry; val_fraction does not
    assert prepare_shards(data_cfg(tmp_path, corpus=cfg.corpus, seq_len=8)).directory == first.directory
    monkeypatch.undo()
    assert prepare_shards(data_cfg(tmp_path, corpus=cfg.corpus, val_fraction=0.3)).directory != first.directory


def test_partial_temp_dir_and_corrupt_entry_are_not_trusted(tmp_path: Path) -> None:
    cfg = data_cfg(tmp_path)
    good = prepare_shards(cfg)
    expected = np.array(good.tokens("train"))
    key = good.directory.name
    # A crashed preparer's half-written temp dir, meta and all, is never read.
    junk = good.directory.with_name(f".tmp-{key}-12345-deadbeef")
    junk.mkdir()
    (junk / "meta.json").write_text(good.directory.joinpath("meta.json").read_text())
    (junk / "train.bin").write_bytes(b"\x00\x01")
    # A damaged published entry (truncated shard) is detected and rebuilt.
    with open(good.directory / "train.bin", "r+b") as fh:
        fh.truncate(10)
    again = prepare_shards(cfg)
    assert again.directory == good.directory
    np.testing.assert_array_equal(again.tokens("train"), expected)
    (good.directory / "meta.json").write_text("{not json")
    np.testing.assert_array_equal(prepare_shards(cfg).tokens("train"), expected)
    assert not list(good.directory.parent.glob(".trash-*"))


def test_losing_the_publish_race_reuses_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = data_cfg(tmp_path)
    winner = prepare_shards(cfg)
    inode = (winner.directory / "train.bin").stat().st_ino
    real_open = shards.open_entry
    calls = []

    def not_there_at_first(directory, inputs):
        calls.append(directory)
        return None if len(calls) == 1 else real_open(directory, inputs)

    monkeypatch.setattr(shards, "open_entry", not_there_at_first)
    loser = prepare_shards(cfg)  # builds its own copy, then finds the winner's entry when it tries to publish
    assert len(calls) >= 2 and loser.directory == winner.directory
    assert (loser.directory / "train.bin").stat().st_ino == inode
    assert [p.name for p in winner.directory.parent.iterdir()] == [winner.directory.name]


def _prepare_in_subprocess(cfg_dict: dict) -> tuple[str, dict]:
    data = prepare_shards(DataConfig.from_dict(cfg_dict))
    return str(data.directory), data.meta


def test_concurrent_preparers(tmp_path: Path) -> None:
    cfg = data_cfg(tmp_path)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_prepare_in_subprocess, [cfg.to_dict()] * 2)
    assert results[0] == results[1]
    directory = Path(results[0][0])
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]
    assert prepare_shards(cfg).meta == results[0][1]


def test_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_shards(data_cfg(tmp_path, corpus=str(tmp_path / "missing")))
    assert err.value.key == "data.corpus"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_bytes(b"")
    with pytest.raises(ConfigError, match="no documents") as err:
        prepare_shards(data_cfg(tmp_path, corpus=str(tmp_path / "empty")))
    assert err.value.key == "data.corpus"
    (tmp_path / "one.txt").write_bytes(b"x" * 10_000)
    with pytest.raises(ConfigError, match="single document") as err:
        prepare_shards(data_cfg(tmp_path, corpus=str(tmp_path / "one.txt")))
    assert err.value.key == "data.corpus"
    with pytest.raises(ConfigError, match="no documents within data.max_bytes"):
        prepare_shards(data_cfg(tmp_path, max_bytes=5))
    assert not list((tmp_path / "cache" / "shards").glob(".tmp-*"))  # failed builds leave nothing behind


def _fraction_with_no_val_document(n_docs: int) -> float:
    fraction = 0.05
    while any(is_val_document(i, fraction) for i in range(n_docs)):
        fraction /= 2
    return fraction


def test_validation_gets_at_least_one_document(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"{i}.txt").write_bytes(bytes([65 + i]) * 100)
    fraction = _fraction_with_no_val_document(10)
    data = prepare_shards(data_cfg(tmp_path, corpus=str(corpus), val_fraction=fraction, seq_len=50))
    assert split_documents(data, "val") == [b"J" * 100]  # the last document moves over
    assert data.meta["splits"]["train"]["n_documents"] == 9
    with pytest.raises(ConfigError) as err:  # 101 validation tokens cannot fill a window of 129
        prepare_shards(data_cfg(tmp_path, corpus=str(corpus), val_fraction=fraction, seq_len=128))
    assert err.value.key == "data.val_fraction"
    with pytest.raises(ConfigError) as err:
        prepare_shards(data_cfg(tmp_path, corpus=str(corpus), val_fraction=fraction, seq_len=5000))
    assert err.value.key == "data.corpus" and "training split" in str(err.value)


def test_a_slow_tokenizer_reports_progress_inside_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neural coders take minutes per batch: what they pass to `progress` reaches prepare_shards's messages."""
    from isoflop.data.tokenizers.byte import ByteTokenizer

    def encode_batch(self, docs, progress=None):
        for i in range(1, len(docs) + 1):  # as a slow kind does: bytes coded so far, document by document
            progress(sum(len(d) for d in docs[:i]))
        return [self.encode(d) for d in docs]

    monkeypatch.setattr(ByteTokenizer, "encode_batch", encode_batch)
    monkeypatch.setattr(shards, "_IN_BATCH_PROGRESS_EVERY_S", -1.0)  # every report becomes a message
    messages: list[str] = []
    cfg = data_cfg(tmp_path)
    prepare_shards(cfg, progress=messages.append)
    sizes = [len(d) for d in iter_documents(cfg)]  # the corpus is one batch
    total = sum(sizes)
    expected = [f"tokenizing: {sum(sizes[:i]) / 1e6:.2f} MB / {total / 1e6:.1f} MB" for i in range(1, len(sizes) + 1)]
    assert [m for m in messages if m in expected] == expected


def test_tokens_are_read_only_memmaps(tmp_path: Path) -> None:
    data = prepare_shards(data_cfg(tmp_path))
    tokens = data.tokens("train")
    assert isinstance(tokens, np.memmap) and not tokens.flags.writeable


@pytest.mark.parametrize("tokenizer", [ByteTokenizerConfig(), BPETokenizerConfig(vocab_size=400)])
def test_documents_cut_in_pieces_give_the_same_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tokenizer) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    whole = prepare_shards(data_cfg(tmp_path, corpus=str(corpus), tokenizer=tokenizer, cache_dir=str(tmp_path / "a")))
    # Tiny pieces and batches: documents span several pieces and pieces span batches.
    monkeypatch.setattr(shards, "_PIECE_BYTES", 50)
    monkeypatch.setattr(shards, "_BATCH_BYTES", 120)
    cut = prepare_shards(data_cfg(tmp_path, corpus=str(corpus), tokenizer=tokenizer, cache_dir=str(tmp_path / "b")))
    assert cut.meta["splits"] == whole.meta["splits"]
    for split in ("train", "val"):
        np.testing.assert_array_equal(cut.tokens(split), whole.tokens(split))


def test_moving_the_last_document_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "_BATCH_BYTES", 6)  # read back a few tokens at a time
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"{i}.txt").write_bytes(bytes(range(i, i + 60)))
    data = prepare_shards(data_cfg(tmp_path, corpus=str(corpus), val_fraction=_fraction_with_no_val_document(10),
                            seq_len=20))
    assert split_documents(data, "val") == [bytes(range(9, 69))]
    assert split_documents(data, "train") == [bytes(range(i, i + 60)) for i in range(9)]
    assert data.meta["splits"]["val"] == {"n_tokens": 61, "n_bytes": 60, "n_documents": 1}


def test_unwritable_cache_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(ConfigError) as err:
        prepare_shards(data_cfg(tmp_path, cache_dir=str(blocker)))
    assert err.value.key == "data.cache_dir"
