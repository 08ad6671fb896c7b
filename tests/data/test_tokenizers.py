"""Tokenizers: lossless on arbitrary bytes, exact byte lengths, save/load, and BPE compression."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isoflop.config import ConfigError
from isoflop.data.config import BPETokenizerConfig, ByteTokenizerConfig, TokenizerConfig
from isoflop.data.tokenizers import Tokenizer, load_saved_tokenizer
from isoflop.data.tokenizers.bpe import escape, unescape

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no what can more "
         "model token compute scaling training language budget parameter data loss learning rate expert "
         "attention layer transformer optimizer batch sequence context length gradient").split()
SAMPLE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def english(rng: random.Random, n_words: int) -> str:
    """Zipf-ish random words with punctuation: text with the statistics BPE is built for."""
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    words = rng.choices(WORDS, weights=weights, k=n_words)
    return " ".join(w + ("." if rng.random() < 0.08 else "") for w in words)


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    rng = random.Random(0)
    docs = [english(rng, 300).encode() for _ in range(200)]
    code = "class Model:\n    def forward(self, x):\n        return x  # identity\n\n\n  \t \r\n \n"
    docs += [
        code.encode() * 50,
        "naïve café Straße — 日本語のテキスト Ελληνικά привет 🙂\n".encode() * 20,
        bytes(range(256)) * 4,
        b"\xff\xfe\x00bad\x80utf-8\xc3",
        "\uf780\uf7ff genuine private-use chars".encode(),
    ]
    return BPETokenizerConfig(vocab_size=1024, train_bytes=1_000_000).build(docs)


@pytest.fixture(scope="module", params=["byte", "bpe"])
def tok(request: pytest.FixtureRequest, bpe: Tokenizer) -> Tokenizer:
    return ByteTokenizerConfig().build() if request.param == "byte" else bpe


# Inputs that stress the escape: runs, every byte value, invalid UTF-8, genuine U+F780..U+F7FF, the EOT text.
pua_text = st.text(alphabet=st.characters(min_codepoint=0xF770, max_codepoint=0xF80F), max_size=50)
runs = st.tuples(st.binary(min_size=1, max_size=3), st.integers(1, 400)).map(lambda t: t[0] * t[1])
any_bytes = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    pua_text.map(lambda s: s.encode("utf-8")),
    runs,
    st.lists(st.one_of(st.binary(max_size=20), pua_text.map(str.encode), st.sampled_from(
        [b"\xef\x9e", b"\xef\x9f\xbf", b"\xed\xa0\x80", b"<|endoftext|>", b"\x00", b" the"])),
        max_size=20).map(b"".join),
)
SPECIAL = [b"", b"a", b"\x00", b"\xff", bytes(range(256)), bytes(range(255, -1, -1)), b"\x00" * 1000,
           b"\x80" * 300, "\uf780\uf7ff\uf77f\uf800".encode(), b"\xef\x9e\x80" * 10, b"\xed\xa0\x80\xed\xb0\x80",
           b"<|endoftext|>", b"a<|endoftext|>b", "\ufeffcafé \U0001f642".encode()]


def _with_examples(f):
    for x in SPECIAL:
        f = example(data=x)(f)
    return f


@SAMPLE
@given(data=any_bytes)
@_with_examples
def test_round_trip_is_lossless(tok: Tokenizer, data: bytes) -> None:
    ids = tok.encode(data)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert tok.eot_id not in ids
    assert ((ids >= 0) & (ids < tok.vocab_size)).all()
    assert tok.decode(ids) == data


@SAMPLE
@given(data=any_bytes)
@_with_examples
def test_token_byte_lengths_sum_to_input_length(tok: Tokenizer, data: bytes) -> None:
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert int(lengths[tok.eot_id]) == 0
    assert int(lengths[tok.encode(data)].sum()) == len(data)


@SAMPLE
@given(text=st.text(max_size=200))
def test_token_byte_lengths_on_valid_utf8(tok: Tokenizer, text: str) -> None:
    data = text.encode("utf-8")
    assert int(tok.token_byte_lengths()[tok.encode(data)].sum()) == len(data)


@SAMPLE
@given(docs=st.lists(any_bytes, max_size=8))
def test_encode_batch_equals_encode(tok: Tokenizer, docs: list[bytes]) -> None:
    batch = tok.encode_batch(docs)
    assert len(batch) == len(docs)
    for ids, doc in zip(batch, docs, strict=True):
        np.testing.assert_array_equal(ids, tok.encode(doc))


def test_decode_drops_eot(tok: Tokenizer) -> None:
    a, b = tok.encode(b"first doc"), tok.encode(b"second")
    joined = np.concatenate([a, [tok.eot_id], b, [tok.eot_id]])
    assert tok.decode(joined) == b"first docsecond"
    assert tok.decode(joined.tolist()) == b"first docsecond"
    assert tok.decode(joined.astype(np.uint16)) == b"first docsecond"


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable char table (openai/gpt-2, src/encoder.py `bytes_to_unicode`), written again."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def reference_decode(bpe: Tokenizer, ids: list[int]) -> bytes:
    """The documented decoding, written plainly from the library's own vocabulary: each id's escaped UTF-8
    bytes (a learned token's ByteLevel chars mapped back to bytes; an added escape token's text; nothing for
    end-of-text), joined, then every 3-byte UTF-8 char U+F780..U+F7FF turned back into its byte (cp - 0xF700)."""
    byte_of = {c: b for b, c in gpt2_bytes_to_unicode().items()}
    lib = bpe._tok  # the `tokenizers.Tokenizer` under test: its vocabulary is the ground truth
    added = {i: t.content for i, t in lib.get_added_tokens_decoder().items()}
    piece = {i: p for p, i in lib.get_vocab(with_added_tokens=True).items()}
    escaped = b"".join(b"" if i == bpe.eot_id else added[i].encode() if i in added
                       else bytes(byte_of[c] for c in piece[i]) for i in ids)
    out, j = bytearray(), 0
    while j < len(escaped):
        three = escaped[j:j + 3]
        if len(three) == 3 and three[:2] in (b"\xef\x9e", b"\xef\x9f") and 0x80 <= three[2] <= 0xBF:
            out.append((((three[1] & 0x3F) << 6) | (three[2] & 0x3F)) + 0xF000 - 0xF700)
            j += 3
        else:
            out.append(escaped[j])
            j += 1
    return bytes(out)


@SAMPLE
@given(st.data())
def test_bpe_decode_is_total(bpe: Tokenizer, data: st.DataObject) -> None:
    """Any id sequence decodes, non-canonical ones (base bytes spelling an escape) included, to exactly the
    bytes the documented rule gives (bpe.py's module docstring), computed here from the vocabulary alone."""
    base = {b: bpe._tok.token_to_id(c) for b, c in gpt2_bytes_to_unicode().items()}  # the 256 base-byte tokens
    escape_bytes = st.sampled_from([[base[0xEF], base[0x9E], base[x]] for x in (0x80, 0xBF)]
                                   + [[base[0xEF], base[0x9F], base[0xBF]], [base[0xEF], base[0x9E]]])
    chunk = st.one_of(st.lists(st.integers(0, bpe.vocab_size - 1), max_size=8), escape_bytes)
    ids = [i for part in data.draw(st.lists(chunk, max_size=8)) for i in part]
    assert bpe.decode(ids) == reference_decode(bpe, ids)


def test_bpe_base_bytes_spelling_an_escape_decode_to_the_escaped_byte(bpe: Tokenizer) -> None:
    base = {b: bpe._tok.token_to_id(c) for b, c in gpt2_bytes_to_unicode().items()}
    assert bpe.decode([base[0xEF], base[0x9E], base[0x80]]) == b"\x80"  # U+F780 spelled byte by byte
    assert bpe.decode([base[0xEF], base[0x9F], base[0xBF], base[ord("a")]]) == b"\xffa"  # U+F7FF, then "a"
    assert bpe.decode([base[0xEF], base[0x9E]]) == b"\xef\x9e"  # a cut-off escape stays as its bytes


def test_save_load_and_fingerprint(tok: Tokenizer, tmp_path) -> None:
    assert isinstance(tok, Tokenizer)
    tok.save(tmp_path / "t")
    loaded = load_saved_tokenizer(tmp_path / "t")
    assert (loaded.kind, loaded.vocab_size, loaded.eot_id) == (tok.kind, tok.vocab_size, tok.eot_id)
    assert loaded.fingerprint() == tok.fingerprint()
    sample = bytes(range(256)) + "naïve \uf7a0 the model".encode()
    np.testing.assert_array_equal(loaded.encode(sample), tok.encode(sample))
    np.testing.assert_array_equal(loaded.token_byte_lengths(), tok.token_byte_lengths())


def test_load_tokenizer_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not a saved tokenizer"):
        load_saved_tokenizer(tmp_path)
    (tmp_path / "tokenizer_meta.json").write_text('{"kind": "nope"}')
    with pytest.raises(ConfigError, match="unknown kind 'nope'") as e:
        load_saved_tokenizer(tmp_path)
    assert e.value.key == str(tmp_path / "tokenizer_meta.json")
    (tmp_path / "tokenizer_meta.json").write_text('{"kind": "bpee"}')  # the family's one "did you mean"
    with pytest.raises(ConfigError, match="did you mean 'bpe'"):
        load_saved_tokenizer(tmp_path)


def test_byte_tokenizer_ids_are_bytes() -> None:
    tok = ByteTokenizerConfig().build()
    assert (tok.vocab_size, tok.eot_id) == (257, 256)
    np.testing.assert_array_equal(tok.encode(b"\x00A\xff"), [0, 65, 255])


def test_bpe_compresses_english(bpe: Tokenizer) -> None:
    text = english(random.Random(1), 5000).encode()  # unseen text from the same distribution
    assert len(text) / len(bpe.encode(text)) > 2.0
    assert bpe.vocab_size <= 1024


def test_bpe_eot_text_is_ordinary_text(bpe: Tokenizer) -> None:
    data = b"before<|endoftext|>after"
    ids = bpe.encode(data)
    assert bpe.eot_id not in ids and bpe.decode(ids) == data


def test_bpe_escapes_are_single_tokens(bpe: Tokenizer) -> None:
    ids = bpe.encode(b"a\x80b\xffc")
    lengths = bpe.token_byte_lengths()[ids]
    assert bpe.decode(ids) == b"a\x80b\xffc" and lengths.sum() == 5


def test_bpe_training_is_deterministic() -> None:
    docs = [english(random.Random(2), 500).encode() for _ in range(20)]
    cfg = BPETokenizerConfig(vocab_size=500)
    assert cfg.build(iter(docs)).fingerprint() == cfg.build(iter(docs)).fingerprint()


def test_bpe_train_bytes_limits_what_is_read() -> None:
    pulled = []

    def docs():
        for i in range(1000):
            pulled.append(i)
            yield english(random.Random(i), 100).encode()

    BPETokenizerConfig(vocab_size=400, train_bytes=2000).build(docs())
    assert len(pulled) < 10  # ~600 bytes a document: the lazy corpus is read no further than needed


@given(data=any_bytes)
@SAMPLE
def test_escape_is_reversible_and_valid_text(data: bytes) -> None:
    text = escape(data)
    text.encode("utf-8")  # no surrogates left: the library can take it
    assert unescape(text.encode("utf-8")) == data


def test_tokenizer_config_family() -> None:
    assert {"bpe", "byte", "bytepiece", "gzip", "unigram"} <= set(TokenizerConfig.kinds())
    assert not ByteTokenizerConfig().needs_training and BPETokenizerConfig().needs_training
    cfg = TokenizerConfig.from_dict({"kind": "bpe", "vocab_size": 512})
    assert isinstance(cfg, BPETokenizerConfig) and cfg.to_dict() == {
        "kind": "bpe", "path": None, "vocab_size": 512, "train_bytes": 8_000_000}
    with pytest.raises(ConfigError, match="vocab_size"):
        BPETokenizerConfig(vocab_size=300)
    with pytest.raises(ConfigError, match="train_bytes"):
        BPETokenizerConfig(train_bytes=0)
    with pytest.raises(ValueError, match="needs the training documents"):
        BPETokenizerConfig().build(None)


# Text with every kind of whitespace neighbourhood the GPT-2 pre-tokenizer regex treats specially.
ragged_text = st.lists(st.one_of(
    st.sampled_from(["the", "model's", "don't", "42", "3.14", "x", "é", "日本", "...", "'s", "'", "\u00a0", "\u3000",
                     " ", "  ", "\n", "\n\n", " \n", "\t", "\r\n", "\uf790", "<|endoftext|>"]),
    st.text(max_size=5)), max_size=80).map(lambda parts: "".join(parts).encode("utf-8"))


@SAMPLE
@given(data=st.one_of(ragged_text, any_bytes), size=st.integers(1, 40))
def test_pieces_concatenate_to_the_whole_encoding(tok: Tokenizer, data: bytes, size: int) -> None:
    pieces = list(tok.pieces(data, size))
    assert pieces and b"".join(pieces) == data
    if len(data) > size and tok.kind == "byte":
        assert len(pieces) > 1
    joined = np.concatenate([np.zeros(0, dtype=np.int64), *tok.encode_batch(pieces)])
    np.testing.assert_array_equal(joined, tok.encode(data))


def test_bpe_pieces_cut_plain_text(bpe: Tokenizer) -> None:
    text = english(random.Random(3), 2000).encode()
    pieces = list(bpe.pieces(text, 1000))
    assert len(pieces) > 5 and all(len(p) >= 1000 for p in pieces[:-1]) and max(map(len, pieces)) < 1100


def test_bpe_training_on_cut_text_learns_the_same_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    import isoflop.data.tokenizers.bpe as bpe_module

    code = "def f(x):\n    return x  # note\n\n"
    doc = (english(random.Random(4), 3000) + "\n" + code * 40 + "\n\n  ragged  \n end").encode()
    cfg = BPETokenizerConfig(vocab_size=700)
    whole = cfg.build([doc]).fingerprint()
    monkeypatch.setattr(bpe_module, "_TRAIN_PIECE_BYTES", 100)
    assert cfg.build([doc]).fingerprint() == whole


def test_unigram_vocab_too_small_for_the_text_is_a_config_error() -> None:
    """sentencepiece needs a piece per distinct character (coverage 1.0): its refusal names the key, no traceback."""
    from isoflop.data.config import UnigramTokenizerConfig

    text = "".join(chr(0x4E00 + i) for i in range(600)).encode("utf-8")  # 600 distinct CJK characters
    with pytest.raises(ConfigError) as err:
        UnigramTokenizerConfig(vocab_size=500).build([text] * 3)
    assert err.value.key == "data.tokenizer.vocab_size" and "500" in err.value.problem
