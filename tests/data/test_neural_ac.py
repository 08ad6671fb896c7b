"""The `ac` tokenizer (arithmetic coding under M1): lossless on arbitrary bytes, the same tokens alone and in a
batch, the code-length bound against the quantised model, M1's context restart, save/load, and its config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isoflop.config import ConfigError
from isoflop.data.config import ACTokenizerConfig, TokenizerConfig
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.m1 import M1
from isoflop.data.tokenizers.neural_ac import ACTokenizer
from isoflop.nn.config import ModelConfig

SAMPLE = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
SPECIAL = [b"", b"\x00", bytes(range(256)), b"z" * 300, b"\xff\xfe\xc3(\x80 not utf-8 \xed\xa0\x80"]


def tiny_m1(seed: int = 0, init_std: float = 0.3) -> M1:
    """A seeded untrained byte-level M1: peaky enough (init_std) that codes are far from 8 bits a byte."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2, train_length=32, init_std=init_std)
    return M1(cfg.build())


@pytest.fixture(scope="module", params=[8, 16])
def tok(request: pytest.FixtureRequest) -> ACTokenizer:
    return ACTokenizer(tiny_m1(), token_bits=request.param, rows=4, context=24)


@SAMPLE
@given(st.binary(max_size=120))
@example(SPECIAL[0])
@example(SPECIAL[1])
@example(SPECIAL[2])
@example(SPECIAL[3])
@example(SPECIAL[4])
def test_round_trip_arbitrary_bytes(tok: ACTokenizer, data: bytes) -> None:
    ids = tok.encode(data)
    assert ids.size and ids.min() >= 0 and ids.max() < tok.eot_id
    assert tok.decode(ids) == data


def test_batch_equals_alone_and_documents_split_at_end_of_text(tok: ACTokenizer) -> None:
    docs = SPECIAL + [b"def f(x):\n    return x * 2\n" * 3]  # 6 documents over 4 rows: a second round too
    reported: list[int] = []
    batch = tok.encode_batch(docs, progress=reported.append)
    # progress: bytes coded so far, rising, once per context chunk, ending at all of them
    assert len(reported) > 1 and reported == sorted(reported) and reported[-1] == sum(map(len, docs))
    for doc, ids in zip(docs, batch, strict=True):
        assert np.array_equal(ids, tok.encode(doc))  # alone it runs in row 0, in the batch elsewhere
    stream = np.concatenate([np.append(ids, tok.eot_id) for ids in batch])
    assert tok.decode(stream) == b"".join(docs)


def test_code_length_within_two_bits_of_the_quantised_information(tok: ACTokenizer) -> None:
    docs = [bytes(range(256)) * 2, b"aaaa" * 100, b""]
    for (message, n_symbols, info), doc in zip(tok._code(docs), docs, strict=True):
        assert n_symbols == len(doc) + 1
        assert info > 0 and message.n_bits <= int(np.ceil(info)) + 2
    assert tok.information_bits(docs) == [c[2] for c in tok._code(docs)]


def test_context_restart_matters_and_stays_lossless() -> None:
    m1, doc = tiny_m1(), bytes(range(200))
    short, long = ACTokenizer(m1, rows=2, context=8), ACTokenizer(m1, rows=2, context=64)
    assert not np.array_equal(short.encode(doc), long.encode(doc))  # the restart changes M1's predictions
    assert short.decode(short.encode(doc)) == doc and long.decode(long.encode(doc)) == doc


def test_save_load_gives_the_same_tokenizer(tok: ACTokenizer, tmp_path) -> None:
    tok.save(tmp_path / "t")
    loaded = load_saved_tokenizer(tmp_path / "t")
    assert isinstance(loaded, ACTokenizer) and loaded.fingerprint() == tok.fingerprint()
    doc = b"save me \x00\xff" * 20
    assert np.array_equal(loaded.encode(doc), tok.encode(doc)) and loaded.decode(tok.encode(doc)) == doc
    other = ACTokenizer(tiny_m1(seed=1), token_bits=tok.token_bits, rows=4, context=24)
    assert other.fingerprint() != tok.fingerprint()  # the fingerprint covers M1's weights


def test_foreign_ids_fail_cleanly(tok: ACTokenizer) -> None:
    with pytest.raises(ValueError):
        tok.decode([tok.eot_id + 1])
    rng = np.random.default_rng(0)
    for _ in range(3):  # random ids decode to some bytes or raise; never hang
        try:
            tok.decode(rng.integers(0, tok.eot_id, 4))
        except ValueError:
            pass


def test_config() -> None:
    cfg = TokenizerConfig.from_dict({"kind": "ac", "token_bits": 16, "m1_steps": 5})
    assert isinstance(cfg, ACTokenizerConfig) and cfg.vocab_size == 65537 and cfg.needs_training
    with pytest.raises(ConfigError, match="tokenizer.path"):
        cfg.build([b"x"])  # M1 is trained by the CLI, not by a run
    tok = cfg.build_with_m1(tiny_m1().model)
    assert isinstance(tok, ACTokenizer) and tok.context == 32 and tok.decode(tok.encode(b"abc")) == b"abc"
    for key, value in (("token_bits", 12), ("precision", 8), ("context", 0)):
        with pytest.raises(ConfigError) as e:
            TokenizerConfig.from_dict({"kind": "ac", key: value})
        assert e.value.key.endswith(key)


def test_stepper_restart_gives_the_bits_of_a_fresh_stepper() -> None:
    """start() after use reuses BOS's cached keys/values and logits: every later step equals a new stepper's."""
    from isoflop.data.tokenizers.m1 import M1Stepper, deterministic

    m1, rows = tiny_m1(seed=3), 4
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 256, (6, rows)), rng.integers(0, 256, (5, rows))
    with deterministic():
        used = M1Stepper(m1, rows=rows, capacity=8)
        used.start()
        for tokens in first:
            used.step(tokens)
        fresh = M1Stepper(m1, rows=rows, capacity=8)
        got, want = [used.start()], [fresh.start()]
        assert used.position == fresh.position == 1
        for tokens in second:
            got.append(used.step(tokens))
            want.append(fresh.step(tokens))
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(got[1], got[2])  # the steps see their tokens (a stuck cache would repeat)
