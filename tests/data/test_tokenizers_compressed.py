"""unigram, bytepiece and gzip tokenizers: lossless on arbitrary bytes, their own invariants, save/load,
bits per byte for tokens that are not whole bytes, and a run on a saved tokenizer folder."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isoflop.config import ConfigError
from isoflop.data.config import DataConfig, GzipTokenizerConfig, TokenizerConfig
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.bytepiece import BytePieceTokenizer, _Unigram, chunks
from isoflop.data.tokenizers.gzip import GzipTokenizer

SAMPLE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
EDGE_CASES = [b"", b"a", bytes(range(256)), b"\x00" * 300, b"a" * 5000, b" " * 100, b"\n\n\t\r",
              b"\xff\xfe\x80\xc3 bad utf-8 \xed\xa0\x80", "\u2581 x \u2581\u2581".encode(), "\uf780\uf7ff".encode(),
              "naïve café 日本語 🙂".encode(), "e\u0301 vs é".encode()]  # the last is NFC-sensitive


def training_docs() -> list[bytes]:
    """Synthetic text plus real code (stdlib modules): BytePiece needs n-grams that are rare enough to end
    pieces, which random words from a dozen-word list do not have."""
    import argparse
    import textwrap

    rng = random.Random(0)
    words = "the model token compute def return self value import class for in if else".split()
    docs = [" ".join(rng.choice(words) for _ in range(200)).encode() + b"\n" for _ in range(5)]
    docs += [Path(m.__file__).read_bytes()[:15_000] for m in (argparse, textwrap)]
    docs.append(b"def f(x):\n    return x  # ok\n\n" * 20)
    docs.append("naïve café Straße — 日本語のテキスト привет 🙂\n".encode() * 10)
    return docs


@pytest.fixture(scope="module", params=["unigram", "bytepiece", "gzip8", "gzip16"])
def tok(request):
    kind = request.param
    if kind.startswith("gzip"):
        return GzipTokenizerConfig(token_bits=int(kind[4:])).build()
    cfg = TokenizerConfig.from_dict({"kind": kind, "vocab_size": 600, "train_bytes": 40_000})
    return cfg.build(training_docs())


@SAMPLE
@given(data=st.binary(max_size=400))
@example(data=b"")
def test_lossless_on_arbitrary_bytes(tok, data: bytes) -> None:
    for x in [data, *EDGE_CASES]:
        ids = tok.encode(x)
        assert tok.decode(ids) == x
        assert tok.eot_id not in ids.tolist()
        assert ((0 <= ids) & (ids < tok.vocab_size)).all()
        if tok.exact_byte_lengths:
            assert int(tok.token_byte_lengths()[ids].sum()) == len(x)


@SAMPLE
@given(text=st.text(max_size=200))
def test_lossless_on_unicode_text_without_nfc(tok, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    assert tok.decode(tok.encode(data)) == data  # no NFC: equality on bytes, not after normalisation


def test_pieces_concatenate_to_the_whole_encoding(tok) -> None:
    doc = b"".join(training_docs())
    parts = list(tok.pieces(doc, 500))
    assert b"".join(parts) == doc
    if tok.kind == "bytepiece":  # cuts between line chunks; the others yield the document whole
        assert len(parts) > 1
    assert np.array_equal(np.concatenate([tok.encode(p) for p in parts]), tok.encode(doc))


def test_save_load_round_trip(tok, tmp_path) -> None:
    tok.save(tmp_path / "t")
    again = load_saved_tokenizer(tmp_path / "t")
    assert again.fingerprint() == tok.fingerprint()
    assert again.vocab_size == tok.vocab_size and again.eot_id == tok.eot_id
    doc = b"".join(training_docs()[-3:])
    assert np.array_equal(again.encode(doc), tok.encode(doc))
    assert np.array_equal(again.token_byte_lengths(), tok.token_byte_lengths())


def test_trained_vocabularies_compress(tok) -> None:
    doc = b"".join(training_docs())
    assert len(doc) / len(tok.encode(doc)) > (3.0 * tok.token_bits / 8 if tok.kind == "gzip" else 2.0)


# ----------------------------------------------------------------------------- bytepiece


@pytest.fixture(scope="module")
def bytepiece() -> BytePieceTokenizer:
    return BytePieceTokenizer.train(training_docs(), vocab_size=500, train_bytes=40_000)


def test_bytepiece_vocabulary(bytepiece) -> None:
    pieces = bytepiece.piece_list()
    assert bytepiece.vocab_size == 3 + len(pieces) <= 500
    assert {bytes([b]) for b in range(256)} <= set(pieces)  # all 256 bytes
    assert bytepiece.decode([0, 1, 2]) == b""  # <pad>, <bos>, <eos> reserved, standing for nothing
    assert pieces == sorted(pieces, key=lambda p: (len(p), p))  # ids from 3 by (length, bytes)
    assert any(len(p) > 4 for p in pieces)


def test_bytepiece_no_piece_is_wasted(bytepiece) -> None:
    model = _Unigram(bytepiece.counts)
    for piece in bytepiece.piece_list():
        assert model.segment(piece) == [piece]


def test_bytepiece_ensure_unicode(bytepiece) -> None:
    multi = [p for p in bytepiece.piece_list() if len(p) > 1]
    assert not [p for p in multi if 0x80 <= p[0] <= 0xBF]


def test_bytepiece_is_deterministic(bytepiece) -> None:
    again = BytePieceTokenizer.train(training_docs(), vocab_size=500, train_bytes=40_000)
    assert again.fingerprint() == bytepiece.fingerprint()


def test_bytepiece_segmentation_is_the_viterbi_optimum(bytepiece) -> None:
    """Against brute force: no other split of a short chunk has a higher unigram log-probability."""
    logp = _Unigram(bytepiece.counts).logp

    def best(s: bytes) -> float:
        if not s:
            return 0.0
        return max(logp[s[:k]] + best(s[k:]) for k in range(1, len(s) + 1) if s[:k] in logp)

    for chunk in chunks(b"return self value\nthe model\n"):
        chunk = chunk[:12]
        got = bytepiece.tokenize(chunk)
        assert b"".join(got) == chunk
        assert math.isclose(sum(logp[p] for p in got), best(chunk), rel_tol=1e-9)


# ----------------------------------------------------------------------------- gzip


@pytest.mark.parametrize("bits", [8, 16])
def test_gzip_tokens_are_the_zlib_stream(bits: int) -> None:
    import zlib

    tok = GzipTokenizer(token_bits=bits, level=9)
    assert tok.vocab_size == 2**bits + 1 and tok.eot_id == 2**bits
    for doc in [b"", b"x", *training_docs()[:3]]:
        ids = tok.encode(doc)
        stream = zlib.compress(doc, 9)
        assert len(ids) == math.ceil(8 * len(stream) / bits)
        assert ids.max() < 2**bits
        assert np.asarray(ids, dtype=np.int64).astype(np.uint8 if bits == 8 else ">u2").tobytes()[:len(stream)] == stream


def test_gzip_decodes_documents_separated_by_end_of_text() -> None:
    tok = GzipTokenizer(token_bits=16)
    docs = training_docs()[:3]
    ids = np.concatenate([np.append(tok.encode(d), tok.eot_id) for d in docs])
    assert tok.decode(ids) == b"".join(docs)
    with pytest.raises(ValueError):
        tok.decode(tok.encode(docs[0])[:-3])  # a truncated stream is refused, not silently cut


def test_gzip_bits_per_byte_uses_the_exact_document_bytes(tmp_path, corpus_dir, monkeypatch) -> None:
    """Over a whole validation split, bits/byte = total loss in bits / total document bytes."""
    from isoflop.data.shards import prepare_shards
    from isoflop.train.evaluate import evaluate, token_bytes

    monkeypatch.setenv("ISOFLOP_CACHE", str(tmp_path))
    cfg = DataConfig.from_dict({"corpus": str(corpus_dir), "seq_len": 16, "val_fraction": 0.2,
                                "tokenizer": {"kind": "gzip", "token_bits": 8}})
    data = prepare_shards(cfg)
    tokens = torch.as_tensor(data.tokens("val").astype(np.int64))
    inputs = torch.cat([torch.tensor([data.tokenizer.eot_id]), tokens[:-1]]).view(1, -1)
    targets = tokens.view(1, -1)  # every token of the split is scored once
    torch.manual_seed(0)
    model = torch.nn.Embedding(264, 264)
    result = evaluate(model, [(inputs, targets)], token_bytes(data.tokenizer, 264, data.byte_share("val")),
                      device=torch.device("cpu"), precision="fp32")
    loss_bits = float(F.cross_entropy(model(inputs)[0], targets[0], reduction="sum")) / math.log(2)
    assert math.isclose(result["val_bpb"], loss_bits / data.n_bytes("val"), rel_tol=1e-9)
    assert math.isclose(result["val_bytes"], data.n_bytes("val"), rel_tol=1e-12)
    with pytest.raises(ValueError):
        token_bytes(data.tokenizer, 264)  # without the share it cannot be right, so it refuses


# ----------------------------------------------------------------------------- data.tokenizer.path


def test_path_takes_the_folder_knobs_and_checks_the_kind(tmp_path) -> None:
    GzipTokenizer(token_bits=16).save(tmp_path / "g")
    cfg = DataConfig.from_dict({"tokenizer": {"kind": "gzip", "path": str(tmp_path / "g")}})
    assert cfg.tokenizer.token_bits == 16 and cfg.tokenizer.vocab_size == 65537  # the folder's, not the default
    with pytest.raises(ConfigError) as e:
        DataConfig.from_dict({"tokenizer": {"kind": "byte", "path": str(tmp_path / "g")}})
    assert e.value.key == "tokenizer.kind" and "gzip" in e.value.problem
    with pytest.raises(ConfigError) as e:
        DataConfig.from_dict({"tokenizer": {"kind": "gzip", "path": str(tmp_path / "nothing")}})
    assert e.value.key == "tokenizer.path"


def test_training_on_a_saved_tokenizer(tok, tmp_path, corpus_dir, cache_dir) -> None:
    """One run on each saved tokenizer of the `tok` fixture."""
    import os

    from isoflop.cli.common import load_experiment
    from isoflop.train.run import run_training
    from tests.conftest import tiny_overrides

    kind = tok.kind
    tok.save(tmp_path / "tok")
    overrides = tiny_overrides(corpus_dir, steps=4) + [f"data.tokenizer.kind={kind}",
                                                       f"data.tokenizer.path={tmp_path / 'tok'}"]
    cfg = load_experiment("tiny", overrides)
    assert cfg.resolved_model.vocab_size >= tok.vocab_size
    with open(os.devnull, "w") as devnull:
        record = run_training(cfg, tmp_path / "run", stream=devnull)
    assert load_saved_tokenizer(tmp_path / "run" / "tokenizer").fingerprint() == tok.fingerprint()
    assert math.isfinite(record.val_bpb) and record.tokenizer == kind
    shards = [p for p in (cache_dir / "shards").iterdir() if not p.name.startswith(".")]
    import json

    meta = json.loads((shards[0] / "meta.json").read_text())
    assert meta["inputs"]["tokenizer"]["path"] == {"fingerprint": tok.fingerprint()}
