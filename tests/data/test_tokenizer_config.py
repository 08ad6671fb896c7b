"""The TokenizerConfig family is the one list of tokenizer kinds: each kind names its tokenizer class, a saved
folder is loaded through the family, a new kind is one config class plus its tokenizer; retired keys still
load; shard cache keys are those older code computed."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isoflop.config import ConfigError, config
from isoflop.data.config import DataConfig, TokenizerConfig
from isoflop.data.corpus import corpus_files, corpus_fingerprint, iter_documents
from isoflop.data.shards import entry_inputs, entry_key, is_val_document, prepare_shards
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.base import BaseTokenizer, as_ids

RETIRED_M1_KEYS = {"m1_steps": 20, "m1_d_model": 32, "m1_n_layers": 1, "m1_seq_len": 64, "m1_batch_size": 4,
                   "m1_lr": 0.01}  # as config.json files written before 2026-12 hold them (any values)


def test_every_kind_names_its_own_tokenizer_class() -> None:
    assert set(TokenizerConfig.kinds()) >= {"byte", "bpe", "unigram", "bytepiece", "gzip", "static-ac", "ac",
                                            "equalinfo-ac"}
    for kind in TokenizerConfig.kinds():
        tokenizer = TokenizerConfig.variant_class(kind).tokenizer_type()
        assert issubclass(tokenizer, BaseTokenizer) and tokenizer.kind == kind


# ----------------------------------------------------------------------------- a kind added in one place

class XorByteTokenizer(BaseTokenizer):
    """A toy kind for the test: id = byte XOR `key`, end-of-text 256; the key is saved in a file."""

    kind = "test-xor"
    vocab_size, eot_id = 257, 256

    def __init__(self, key: int):
        self.key = key

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64) ^ self.key

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        arr = as_ids(ids)
        return bytes((arr[arr != self.eot_id] ^ self.key).astype(np.uint8))

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        lengths[self.eot_id] = 0
        return lengths

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "key": self.key}

    def files(self) -> dict[str, bytes]:
        return {"xor_key.txt": f"{self.key}\n".encode()}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> XorByteTokenizer:
        return cls(int((directory / "xor_key.txt").read_text()))


@pytest.fixture
def xor_kind(monkeypatch: pytest.MonkeyPatch) -> type[TokenizerConfig]:
    """The new kind's config class, registered in a copy of the family for this test only."""
    monkeypatch.setattr(TokenizerConfig, "_members", copy.deepcopy(TokenizerConfig._members))

    @config
    class XorTokenizerConfig(TokenizerConfig):
        """Bytes XOR a key: the whole of a new kind on the config side."""

        kind = "test-xor"
        tokenizer_class = f"{__name__}:XorByteTokenizer"
        key: int = 0x5A
        """The XOR key."""

        @property
        def vocab_size(self) -> int:
            return 257

        def build(self, docs: Iterable[bytes] | None = None) -> XorByteTokenizer:
            return self.tokenizer_type()(self.key)

    return XorTokenizerConfig


def test_a_new_kind_round_trips_through_shards_and_its_saved_folder(xor_kind, tmp_path, corpus_dir) -> None:
    cfg = DataConfig.from_dict({"corpus": str(corpus_dir), "seq_len": 16, "val_fraction": 0.25,
                                "cache_dir": str(tmp_path / "cache"), "tokenizer": {"kind": "test-xor", "key": 7}})
    assert isinstance(cfg.tokenizer, xor_kind) and cfg.tokenizer.key == 7
    data = prepare_shards(cfg)
    docs = list(iter_documents(cfg))
    for split in ("train", "val"):
        split_docs = [d for i, d in enumerate(docs) if is_val_document(i, cfg.val_fraction) == (split == "val")]
        assert split_docs  # this corpus has documents on both sides of the hash
        want = np.concatenate([np.append(np.frombuffer(d, dtype=np.uint8) ^ 7, 256) for d in split_docs])
        np.testing.assert_array_equal(np.asarray(data.tokens(split), dtype=np.int64), want)  # exact bytes
        assert data.tokenizer.decode(data.tokens(split)) == b"".join(split_docs)

    again = prepare_shards(cfg)  # the cached entry: its tokenizer/ folder is loaded through the family
    assert again.directory == data.directory and isinstance(again.tokenizer, XorByteTokenizer)
    folder = data.directory / "tokenizer"
    loaded = load_saved_tokenizer(folder)
    assert isinstance(loaded, XorByteTokenizer) and loaded.key == 7 and loaded.fingerprint() == data.tokenizer.fingerprint()
    by_path = DataConfig.from_dict({"corpus": str(corpus_dir), "tokenizer": {"kind": "test-xor", "path": str(folder)}})
    assert by_path.tokenizer.key == 7  # the folder's knob, as for every kind


def test_without_its_config_class_a_kind_is_unknown(tmp_path) -> None:
    XorByteTokenizer(3).save(tmp_path / "t")  # a folder whose kind the family does not hold
    with pytest.raises(ConfigError, match="unknown kind 'test-xor'"):
        load_saved_tokenizer(tmp_path / "t")


# ----------------------------------------------------------------------------- retired m1_* keys

@pytest.mark.parametrize("kind", ["ac", "equalinfo-ac"])
def test_old_config_dicts_with_the_m1_knobs_still_load(kind) -> None:
    cfg = TokenizerConfig.from_dict({"kind": kind, "token_bits": 8, **RETIRED_M1_KEYS})
    assert cfg.kind == kind and cfg.token_bits == 8
    assert not any(k.startswith("m1_") for k in cfg.to_dict())
    data = DataConfig.from_dict({"seq_len": 32, "tokenizer": {"kind": kind, **RETIRED_M1_KEYS}})
    assert data.tokenizer.to_dict() == TokenizerConfig.from_dict({"kind": kind}).to_dict()
    with pytest.raises(ConfigError, match="m1_stepz"):  # retired means those names only
        TokenizerConfig.from_dict({"kind": kind, "m1_stepz": 1})
    with pytest.raises(ConfigError, match="m1_steps"):  # and only where they were
        TokenizerConfig.from_dict({"kind": "gzip", "m1_steps": 1})


# ----------------------------------------------------------------------------- shard cache keys


def old_key(cfg: DataConfig, tokenizer: dict[str, Any]) -> str:
    """The key as the code before 2026-12 computed it, spelled out: sha256 over the format, the corpus
    fingerprint, the validation fraction and the tokenizer config's dict (path -> the saved fingerprint)."""
    inputs = {"format": 1, "corpus": corpus_fingerprint(cfg, corpus_files(cfg)), "val_fraction": cfg.val_fraction,
              "tokenizer": tokenizer}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def test_shard_keys_of_plain_kinds_are_unchanged(corpus_dir) -> None:
    for tok, old in (({"kind": "byte"}, {"kind": "byte", "path": None}),
                     ({"kind": "gzip"}, {"kind": "gzip", "path": None, "token_bits": 8, "level": 9}),
                     ({"kind": "bpe", "vocab_size": 500}, {"kind": "bpe", "path": None, "vocab_size": 500,
                                                          "train_bytes": 8_000_000})):
        cfg = DataConfig.from_dict({"corpus": str(corpus_dir), "tokenizer": tok})
        assert entry_key(entry_inputs(cfg, corpus_files(cfg), None)) == old_key(cfg, old)


def test_shard_key_of_a_saved_ac_tokenizer_keeps_the_retired_m1_knobs(tmp_path, corpus_dir) -> None:
    """Before 2026-12 the ac config held M1's shape (filled from the folder) and how M1 trained (defaults), so
    every cached ac/equalinfo-ac entry's key holds them: the key must still be that one."""
    from isoflop.data.tokenizers.neural_ac import ACTokenizer
    from tests.data.test_neural_ac import tiny_m1

    tok = ACTokenizer(tiny_m1(), token_bits=8, rows=4)
    tok.save(tmp_path / "ac")
    cfg = DataConfig.from_dict({"corpus": str(corpus_dir), "tokenizer": {"kind": "ac", "path": str(tmp_path / "ac")}})
    saved = load_saved_tokenizer(tmp_path / "ac")
    old = {"kind": "ac", "path": {"fingerprint": tok.fingerprint()}, "token_bits": 8, "precision": 14, "rows": 4,
           "context": 32, "m1_steps": 300, "m1_d_model": 32, "m1_n_layers": 1, "m1_seq_len": 32,
           "m1_batch_size": 16, "m1_lr": 0.003}
    assert entry_key(entry_inputs(cfg, corpus_files(cfg), saved)) == old_key(cfg, old)
