"""The static-ac tokenizer: lossless on arbitrary bytes, padding ignored, save/load, compression near the
byte entropy of the text it was counted on, and its config."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isoflop.config import ConfigError
from isoflop.data.config import StaticACTokenizerConfig, TokenizerConfig
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.arithmetic import information_bits
from isoflop.data.tokenizers.static_ac import END, MODEL_FILE, StaticACTokenizer

SAMPLE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no what can more model token "
         "compute scaling training language budget parameter data loss").split()


def english(rng: random.Random, n_words: int) -> bytes:
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    words = rng.choices(WORDS, weights=weights, k=n_words)
    return " ".join(w + ("." if rng.random() < 0.08 else "") for w in words).encode()


@pytest.fixture(scope="module", params=[8, 16])
def tok(request: pytest.FixtureRequest) -> StaticACTokenizer:
    rng = random.Random(0)
    docs = [english(rng, 400) for _ in range(50)]
    return StaticACTokenizerConfig(token_bits=request.param).build(docs)


any_bytes = st.one_of(
    st.binary(max_size=800),
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    st.tuples(st.binary(min_size=1, max_size=3), st.integers(1, 3000)).map(lambda t: t[0] * t[1]),
)


@SAMPLE
@given(data=any_bytes)
@example(data=b"")
@example(data=b"\x00")
@example(data=bytes(range(256)))
@example(data=b"\x00" * 10_000)
@example(data=b"\xfe" * 4000)
def test_round_trip_is_lossless(tok: StaticACTokenizer, data: bytes) -> None:
    ids = tok.encode(data)
    assert ids.dtype == np.int64 and ids.ndim == 1 and ids.size >= 1
    assert ((ids >= 0) & (ids < tok.eot_id)).all()
    assert tok.decode(ids) == data


@SAMPLE
@given(data=any_bytes, extra=st.integers(1, 5))
def test_padding_is_ignored_and_tokens_are_minimal(tok: StaticACTokenizer, data: bytes, extra: int) -> None:
    """Trailing zero tokens decode the same; one token fewer (when there is more than one) does not."""
    ids = tok.encode(data)
    assert tok.decode(np.concatenate([ids, np.zeros(extra, dtype=np.int64)])) == data
    if ids.size > 1:
        try:
            shorter = tok.decode(ids[:-1])
        except ValueError:  # no END within the guard: also not the data
            shorter = None
        assert shorter != data


def test_documents_between_end_of_text(tok: StaticACTokenizer) -> None:
    docs = [b"first doc", b"", b"\xff\x00 third", english(random.Random(9), 50)]
    ids = np.concatenate([np.append(tok.encode(d), tok.eot_id) for d in docs])
    assert tok.decode(ids) == b"".join(docs)
    assert tok.decode(ids.tolist()) == b"".join(docs)


def test_decode_rejects_foreign_input(tok: StaticACTokenizer) -> None:
    with pytest.raises(ValueError, match="no end symbol"):
        tok.decode(np.zeros(3, dtype=np.int64))  # names the point 0: NUL bytes forever, never END
    with pytest.raises(ValueError, match="token ids"):
        tok.decode([tok.eot_id + 1])


def test_save_load_equality(tok: StaticACTokenizer, tmp_path) -> None:
    tok.save(tmp_path / "t")
    loaded = load_saved_tokenizer(tmp_path / "t")
    assert isinstance(loaded, StaticACTokenizer)
    assert (loaded.vocab_size, loaded.eot_id, loaded.token_bits) == (tok.vocab_size, tok.eot_id, tok.token_bits)
    assert loaded.fingerprint() == tok.fingerprint()
    np.testing.assert_array_equal(loaded.cdf, tok.cdf)
    sample = bytes(range(256)) + english(random.Random(2), 100)
    np.testing.assert_array_equal(loaded.encode(sample), tok.encode(sample))
    assert not loaded.exact_byte_lengths and loaded.token_byte_lengths()[tok.eot_id] == 0
    model = json.loads((tmp_path / "t" / MODEL_FILE).read_text())
    model["cdf"][5] = model["cdf"][4]  # not strictly increasing
    (tmp_path / "t" / MODEL_FILE).write_text(json.dumps(model))
    with pytest.raises(ConfigError, match="bad static-ac model"):
        load_saved_tokenizer(tmp_path / "t")
    (tmp_path / "t" / MODEL_FILE).unlink()
    with pytest.raises(ConfigError, match="missing"):
        load_saved_tokenizer(tmp_path / "t")


def test_compression_is_near_the_byte_entropy(tok: StaticACTokenizer) -> None:
    """On unseen text of the training distribution: well under 8 bits/byte, within the model's cross-entropy
    (Σ -log2 q, END included) + 2 bits + the padding, and close to the text's own empirical byte entropy."""
    text = english(random.Random(1), 20_000)
    n_bits = tok.encode(text).size * tok.token_bits
    symbols = np.append(np.frombuffer(text, dtype=np.uint8).astype(np.int64), END)
    assert n_bits <= information_bits(symbols, tok.cdf) + 2 + tok.token_bits
    counts = np.bincount(np.frombuffer(text, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / len(text)
    entropy = float(-(p * np.log2(p)).sum())
    bits_per_byte = n_bits / len(text)
    assert bits_per_byte < 8 and entropy - 0.01 < bits_per_byte < entropy + 0.05, (bits_per_byte, entropy)


def test_counts_follow_the_training_bytes() -> None:
    tok = StaticACTokenizer.train([b"ab" * 500, b"a" * 1000], train_bytes=1500)  # 1000 a, 500 b read
    freq = np.diff(tok.cdf)
    assert freq[ord("a")] > 1.9 * freq[ord("b")] and freq[ord("b")] > 1.9 * freq[END]
    assert freq[ord("c")] == 1 and tok.decode(tok.encode(b"abc\x00")) == b"abc\x00"
    fine = StaticACTokenizerConfig(precision=20).build([b"abc"])  # state_bits shrinks to 62 - 20
    assert fine.state_bits == 42 and fine.decode(fine.encode(b"abcabd")) == b"abcabd"
    empty = StaticACTokenizer.train([])
    assert empty.decode(empty.encode(b"anything \xff")) == b"anything \xff"


def test_config_family() -> None:
    assert "static-ac" in TokenizerConfig.kinds()
    cfg = TokenizerConfig.from_dict({"kind": "static-ac", "token_bits": 16})
    assert isinstance(cfg, StaticACTokenizerConfig) and cfg.vocab_size == 65537 and cfg.needs_training
    assert cfg.to_dict() == {"kind": "static-ac", "path": None, "token_bits": 16, "precision": 14,
                             "train_bytes": 16_000_000}
    for key, value in [("token_bits", 12), ("precision", 8), ("train_bytes", 0)]:
        with pytest.raises(ConfigError, match=key):
            StaticACTokenizerConfig(**{key: value})
    with pytest.raises(ValueError, match="needs the training documents"):
        StaticACTokenizerConfig().build(None)
