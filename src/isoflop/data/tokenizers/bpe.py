"""Byte-level BPE (GPT-2 style) trained with the Hugging Face `tokenizers` library, lossless on any bytes.

Why an escape: `tokenizers` takes `str`, and a Rust string cannot hold the lone surrogates that Python's
"surrogateescape" makes of invalid UTF-8, so arbitrary bytes need a reversible mapping onto valid text:

    encode:  bytes --utf-8 "surrogateescape"--> str (invalid byte b -> U+DC00+b, b in 0x80..0xFF)
                   --escape--> str where U+DC00+b -> U+F700+b (Private Use block U+F780..U+F7FF),
                   and a *genuine* input char in U+F780..U+F7FF -> the escapes of its 3 UTF-8 bytes,
                   so every char of that block in escaped text is an escape and decoding is unambiguous.
    decode:  str --U+F700+b -> U+DC00+b--> .encode("utf-8", "surrogateescape") -> the original bytes.

The 128 escape chars are registered as (non-special) added tokens, which the library cuts out of the text
before BPE runs: an escape is always a token of its own, standing for exactly 1 input byte. They are also
cut out of the training text, so no learned token holds part of an escape's 3 UTF-8 bytes (EF 9E/9F xx
only ever occurs inside an escape in escaped text). Hence `token_byte_lengths()[i] == len(decode([i]))`
and the lengths of `encode(x)` sum to len(x) for every x. A non-canonical id sequence (base-byte tokens
spelling an escape's bytes) still decodes without error, to the escaped byte.

"<|endoftext|>" is the trainer's special token (id 0) for compatibility with other tools, but
`encode_special_tokens` is set so that the literal text "<|endoftext|>" in a document is ordinary text:
`encode` never emits the end-of-text id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.escape import ESC_BASE, N_ESCAPES, EscapedTableTokenizer, escape, unescape

__all__ = ["BPETokenizer", "escape", "unescape"]

EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
_ESCAPE_RUNS = re.compile("[\uf780-\uf7ff]+")
_SAFE_CUT = re.compile(rb"[!-~][ \n][!-~]")  # see _safe_pieces
_TRAIN_PIECE_BYTES = 1 << 20


@cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable char ByteLevel uses for each byte -> the byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


class BPETokenizer(EscapedTableTokenizer):
    """A trained byte-level BPE; wraps a `tokenizers.Tokenizer`."""

    kind = "bpe"

    def __init__(self, tok: Any, *, raw_json: bytes | None = None):
        self._tok = tok
        # Literal "<|endoftext|>" in a document is text, not the separator (escapes are non-special and
        # still cut out). Not stored in tokenizer.json, so it is set on every construction.
        tok.encode_special_tokens = True
        self._raw_json = raw_json if raw_json is not None else tok.to_str().encode()
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise ValueError(f"BPE tokenizer has no {EOT!r} token")
        self.eot_id = int(eot)
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        self._table = self._token_bytes()

    @classmethod
    def train(cls, docs: Iterable[bytes], *, vocab_size: int, train_bytes: int) -> BPETokenizer:
        """Learn merges from the first `train_bytes` bytes of `docs` (the last document cut to fit)."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - N_ESCAPES,  # the escapes are added after training, within vocab_size
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_training_texts(docs, train_bytes), trainer=trainer)
        tok.add_tokens([AddedToken(chr(ESC_BASE + b), special=False, normalized=False)
                        for b in range(0x80, 0x100)])
        return cls(tok)

    def _token_bytes(self) -> list[bytes]:
        """For each id, the UTF-8 bytes of the escaped text it stands for (b"" for end-of-text)."""
        byte_of = _byte_level_decoder()
        added = {i: t.content for i, t in self._tok.get_added_tokens_decoder().items()}
        vocab = self._tok.get_vocab(with_added_tokens=True)
        table: list[bytes | None] = [None] * self.vocab_size
        for piece, i in vocab.items():
            if i == self.eot_id:
                table[i] = b""
            elif i in added:
                table[i] = added[i].encode("utf-8")
            else:
                table[i] = bytes(byte_of[c] for c in piece)
        missing = [i for i, t in enumerate(table) if t is None]
        if missing:
            raise ValueError(f"BPE vocabulary has holes, e.g. id {missing[0]}")
        escapes = [self._tok.token_to_id(chr(ESC_BASE + b)) for b in range(0x80, 0x100)]
        if any(e is None or e not in added for e in escapes):
            raise ValueError("BPE tokenizer lacks the 128 escape tokens of isoflop's lossless scheme")
        return table  # type: ignore[return-value]

    def encode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._tok.encode(escape(data), add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                     ) -> list[np.ndarray]:
        # encode_batch_fast skips the offsets we do not use; the library spreads a batch over its threads.
        encodings = self._tok.encode_batch_fast([escape(d) for d in docs], add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def pieces(self, data: bytes, size: int) -> Iterator[bytes]:
        return _safe_pieces(data, size)

    def files(self) -> dict[str, bytes]:
        return {TOKENIZER_FILE: self._raw_json}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer

        path = directory / TOKENIZER_FILE
        try:
            raw = path.read_bytes()
            tok = Tokenizer.from_str(raw.decode("utf-8"))
            out = cls(tok, raw_json=raw)  # keep the bytes read so fingerprint() matches the saved files
        except Exception as e:  # OSError, bad UTF-8, or the library's own parse error
            raise ConfigError(str(path), f"cannot load BPE tokenizer: {e}") from None
        if meta.get("vocab_size") != out.vocab_size or meta.get("eot_id") != out.eot_id:
            raise ConfigError(str(directory), f"{TOKENIZER_FILE} does not match its meta {meta}")
        return out


def _safe_pieces(data: bytes, size: int) -> Iterator[bytes]:
    """Cuts where GPT-2's pre-tokenizer regex is sure to split: between an ASCII non-space char and a
    single space or newline followed by another ASCII non-space char (the whitespace then starts the next
    pre-token, whatever follows). No BPE merge spans a pre-token, and the added-token (escape) split only
    happens at escape chars, so the pieces' encodings concatenate to the whole's, and training on the
    pieces counts the same words. Text without such a spot (say, long runs of CJK) is cut at the next one
    found, however far."""
    start = 0
    while len(data) - start > size:
        found = _SAFE_CUT.search(data, start + max(size, 1) - 1)
        if found is None:
            break
        cut = found.start() + 1
        yield data[start:cut]
        start = cut
    yield data[start:]


def _training_texts(docs: Iterable[bytes], budget: int) -> Iterator[str]:
    """Escaped training text, at most `budget` input bytes, cut at escapes so no merge spans one, and
    into ~1 MB pieces since the library's memory grows with the length of each string it is given."""
    if budget <= 0:
        return
    for doc in docs:
        doc = doc[:budget]
        budget -= len(doc)
        for chunk in _safe_pieces(doc, _TRAIN_PIECE_BYTES):
            for piece in _ESCAPE_RUNS.split(escape(chunk)):
                if piece:
                    yield piece
        if budget <= 0:
            return  # before pulling another document from a lazy corpus


__all__ = ["BPETokenizer", "EOT", "escape", "unescape"]
