"""BytePiece's compiled encoder (`bytepiece_kernels.py`) against the pure-Python reference segmentation
(`chunks` + `_Unigram.segment`, the encoder before the kernel): the same ids for every input, ties
included."""

from __future__ import annotations

import argparse
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from isoflop.data.tokenizers import bytepiece_kernels
from isoflop.data.tokenizers.bytepiece import BytePieceTokenizer, chunks

SAMPLE = settings(max_examples=150, deadline=None)
EDGE_CASES = [b"", b"a", b"\n", bytes(range(256)), bytes(range(255, -1, -1)) * 3, b"\x00" * 300, b"a" * 5000,
              b" " * 3000, b"\n" * 1000, b"\n\n\t\r", b"x\n\n\ny", b"no newline at the end", b"\r\n" * 50,
              b"\xff\xfe\x80\xc3 bad utf-8 \xed\xa0\x80\xc3", b"\x80" * 100,
              "naïve café 日本語 🙂\n".encode() * 5,
              b"    return self\n" * 30]
SINGLE_BYTES = {bytes([b]): 1 for b in range(256)}


def reference_ids(tok: BytePieceTokenizer, data: bytes) -> list[int]:
    """The encoder as it was before the kernel: the plain-Python Viterbi, line chunk by line chunk."""
    return [tok._ids[p] for c in chunks(data) for p in tok._model.segment(c)]


def assert_same(tok: BytePieceTokenizer, data: bytes) -> None:
    ids = tok.encode(data)
    assert ids.dtype == np.int64
    assert ids.tolist() == reference_ids(tok, data)
    assert tok.decode(ids) == data


@pytest.fixture(scope="module")
def trained() -> BytePieceTokenizer:
    rng = random.Random(0)
    words = "the model token compute def return self value import class for in if else".split()
    docs = [" ".join(rng.choice(words) for _ in range(200)).encode() + b"\n" for _ in range(3)]
    docs += [Path(m.__file__).read_bytes()[:12_000] for m in (argparse, textwrap)]
    docs.append("naïve café Straße — 日本語のテキスト привет 🙂\n".encode() * 10)
    return BytePieceTokenizer.train(docs, vocab_size=400, train_bytes=30_000)


@pytest.fixture(scope="module")
def tied() -> BytePieceTokenizer:
    """Equal counts everywhere, so many splits tie exactly: the kernel must break ties as the reference does
    (the earliest candidate, i.e. the shortest last piece found from the leftmost start, keeps best[t])."""
    pieces = [b"aa", b"aaa", b"ab", b"ba", b"aba", b"bab", b"abab", b"\n\n", b" a", b"a ", b"aa\n",
              b"\na", b"a\n\na"]  # the last two span line chunks, so they must never be used
    return BytePieceTokenizer({**SINGLE_BYTES, **dict.fromkeys(pieces, 1)})


def test_edge_cases(trained, tied) -> None:
    for tok in (trained, tied):
        for data in EDGE_CASES:
            assert_same(tok, data)
    assert trained.encode(b"").shape == (0,)


def test_real_text(trained) -> None:
    text = Path(argparse.__file__).read_bytes() + Path(random.__file__).read_bytes()[:30_000]
    assert_same(trained, text)
    assert len(trained.encode(text)) < len(text) / 2  # learned pieces are used, not just single bytes
    for doc in (text[:5000], text[12_345:23_456], text[-777:]):
        assert_same(trained, doc)


def test_ties_break_as_in_the_reference(tied) -> None:
    # Every piece has the same log-prob L: "aaaa" = a+aaa = aa+aa = aaa+a = 2L exactly. The reference keeps
    # a+aaa, the candidate from start 1, found before those from starts 2 and 3.
    assert tied.tokenize(b"aaaa") == [b"a", b"aaa"]
    for data in (b"aaa", b"aaaa", b"ababab", b"abababa" * 7, b"a a a\n\naa\n"):
        assert_same(tied, data)


@SAMPLE
@given(data=st.binary(max_size=300))
@example(data=bytes(range(256)))
def test_random_bytes(trained, data: bytes) -> None:
    assert_same(trained, data)


@SAMPLE
@given(text=st.text(alphabet="ab \n", max_size=80))
def test_random_text_with_ties(tied, text: str) -> None:
    assert_same(tied, text.encode())


@SAMPLE
@given(words=st.lists(st.sampled_from(["self", "return", " ", "    ", "\n", "value", "é", "日本", "\x80"]),
                      max_size=60))
def test_random_word_text(trained, words: list[str]) -> None:
    assert_same(trained, "".join(words).encode())


@settings(max_examples=40, deadline=None)
@given(vocab=st.dictionaries(st.binary(min_size=2, max_size=5).map(lambda b: bytes(x % 3 + 97 for x in b)),
                             st.integers(1, 4), max_size=20),
       data=st.binary(max_size=60).map(lambda b: bytes(x % 4 + 97 if x % 5 else 10 for x in b)))
def test_random_vocabularies(vocab: dict[bytes, int], data: bytes) -> None:
    """Small random vocabularies over a few letters with small counts: dense matches and exact ties."""
    assert_same(BytePieceTokenizer({**SINGLE_BYTES, **vocab}), data)


def test_without_numba_the_reference_loop_runs(trained, monkeypatch) -> None:
    monkeypatch.setattr(bytepiece_kernels, "HAVE_NUMBA", False)
    data = EDGE_CASES[-1] + EDGE_CASES[-4]
    assert trained.encode(data).tolist() == reference_ids(trained, data)


def test_a_byte_without_count_is_an_error() -> None:
    tok = BytePieceTokenizer({**SINGLE_BYTES, b"z": 0})
    assert_same(tok, b"abc")
    with pytest.raises(ValueError, match="positive count"):
        tok.encode(b"xyz")


@pytest.mark.parametrize("pieces", [[b"abc"], [b"a" * 36, b"a" * 35], [bytes([b, b]) for b in range(256)]])
def test_trie_matches_the_pieces(pieces: list[bytes]) -> None:
    """Every trie node spells a distinct prefix; exactly the pieces carry their ids and log-probabilities."""
    tok = BytePieceTokenizer({**SINGLE_BYTES, **dict.fromkeys(pieces, 2)})
    root_child, child_lo, child_hi, node_byte, node_logp, node_id = bytepiece_kernels.build_trie(
        tok._model.logp, tok._ids)
    spelled = {0: b""}
    for v in range(1, len(node_byte)):
        parents = [u for u in spelled if child_lo[u] <= v < child_hi[u]]
        assert len(parents) == 1
        spelled[v] = spelled[parents[0]] + bytes([node_byte[v]])
    assert sorted(spelled.values()) == sorted({p[:i] for p in tok._model.logp for i in range(len(p) + 1)})
    for v, p in spelled.items():
        assert node_id[v] == tok._ids.get(p, -1)
        if p in tok._model.logp:
            assert node_logp[v] == tok._model.logp[p]
    assert [spelled[v] for v in root_child] == [bytes([b]) for b in range(256)]
