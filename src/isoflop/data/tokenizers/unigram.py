"""SentencePiece Unigram (Kudo 2018) trained with the `sentencepiece` library, lossless on any bytes.

Settings: identity normalisation (no NFKC), byte fallback (a char outside the vocabulary becomes its UTF-8
byte tokens <0x00>..<0xFF>, so NUL and control bytes are fine), no dummy prefix, whitespace kept as is
(`remove_extra_whitespaces=False`, whitespace-only pieces allowed).

Two things `sentencepiece` cannot take are escaped, with bpe.py's reversible scheme:
- invalid UTF-8 (the library takes `str`): byte b in 0x80..0xFF -> private-use char U+F700+b, and a genuine
  char of U+F780..U+F7FF -> the escapes of its three UTF-8 bytes;
- a genuine U+2581 "▁", which the library uses for the space and would decode as " ": also written as the
  escapes of its three UTF-8 bytes.
The 128 escape chars are `user_defined_symbols`, always cut out as tokens of their own, so each stands for
exactly one input byte and `token_byte_lengths()[i] == len(decode([i]))`.

Ids: 0 <unk> (never emitted: byte fallback covers every char), 1 "<|endoftext|>" (the library's eos, never
emitted by `encode`), then the 128 escapes, the 256 byte pieces, and the learned pieces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.bpe import EOT
from isoflop.data.tokenizers.escape import (
    ESC_BASE,
    ESCAPE_LEADS,
    N_ESCAPES,
    EscapedTableTokenizer,
    escape_table,
)

MODEL_FILE = "unigram.model"
SPACE = "\u2581"  # sentencepiece's whitespace mark
N_RESERVED = 2 + N_ESCAPES + 256  # <unk>, end-of-text, escapes, byte pieces
_SPACE_UTF8 = SPACE.encode("utf-8")
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")
_TRAIN_SENTENCE_BYTES = 4096  # training text is given in pieces of about this size (the library's limit
# on a sentence, max_sentence_length, is raised to cover them; longer ones would be skipped)


@cache
def _unigram_escape_table() -> dict[int, str]:
    table = dict(escape_table())
    table[ord(SPACE)] = "".join(chr(ESC_BASE + b) for b in _SPACE_UTF8)
    return table


def escape(data: bytes) -> str:
    """Arbitrary bytes as text sentencepiece keeps exactly (see the module docstring)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").translate(_unigram_escape_table())
    if _SPACE_UTF8 in data or any(lead in data for lead in ESCAPE_LEADS):
        return text.translate(_unigram_escape_table())
    return text


class UnigramTokenizer(EscapedTableTokenizer):
    """A trained SentencePiece unigram model; wraps a `sentencepiece.SentencePieceProcessor`."""

    kind = "unigram"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = int(self._sp.get_piece_size())
        self.eot_id = int(self._sp.eos_id())
        if self.eot_id < 0 or self._sp.id_to_piece(self.eot_id) != EOT:
            raise ValueError(f"unigram model has no {EOT!r} end-of-text piece")
        self._table = self._token_bytes()

    @classmethod
    def train(cls, docs: Iterable[bytes], *, vocab_size: int, train_bytes: int) -> UnigramTokenizer:
        """Learn a vocabulary from the first `train_bytes` bytes of `docs` (the last document cut to fit).
        A small corpus may give fewer pieces than `vocab_size` (hard_vocab_limit off)."""
        import io

        import sentencepiece as spm

        model = io.BytesIO()
        try:
            _train_sentencepiece(spm, docs, train_bytes, vocab_size, model)
        except RuntimeError as e:  # sentencepiece's own check, e.g. fewer pieces than the text's characters
            from isoflop.config import ConfigError

            raise ConfigError("data.tokenizer.vocab_size", f"sentencepiece cannot train {vocab_size} pieces on this "
                              f"text: {str(e).splitlines()[0][-160:]}") from None
        return cls(model.getvalue())

    def _token_bytes(self) -> list[bytes]:
        """For each id, the UTF-8 bytes of the escaped text it stands for (b"" for <unk> and end-of-text)."""
        sp = self._sp
        table = []
        for i in range(self.vocab_size):
            piece = sp.id_to_piece(i)
            if sp.is_control(i) or sp.is_unknown(i):
                table.append(b"")
            elif sp.is_byte(i):
                table.append(bytes([int(_BYTE_PIECE.fullmatch(piece).group(1), 16)]))  # type: ignore[union-attr]
            else:
                table.append(piece.replace(SPACE, " ").encode("utf-8"))
        return table

    def encode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._sp.encode(escape(data)), dtype=np.int64)

    def encode_batch(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                     ) -> list[np.ndarray]:
        ids = self._sp.encode([escape(d) for d in docs], num_threads=2)
        return [np.asarray(x, dtype=np.int64) for x in ids]

    def files(self) -> dict[str, bytes]:
        return {MODEL_FILE: self._proto}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> UnigramTokenizer:
        path = directory / MODEL_FILE
        try:
            out = cls(path.read_bytes())
        except Exception as e:  # OSError, or the library's own parse error
            raise ConfigError(str(path), f"cannot load unigram model: {e}") from None
        if meta.get("vocab_size") != out.vocab_size or meta.get("eot_id") != out.eot_id:
            raise ConfigError(str(directory), f"{MODEL_FILE} does not match its meta {meta}")
        return out


def _training_sentences(docs: Iterable[bytes], budget: int) -> Iterator[str]:
    """Escaped training text, at most `budget` input bytes, in pieces of about _TRAIN_SENTENCE_BYTES cut
    after a newline where there is one (pieces keep their newlines, so pieces like ":\\n" are learned)."""
    for doc in docs:
        if budget <= 0:
            return
        doc = doc[:budget]
        budget -= len(doc)
        start = 0
        while start < len(doc):
            end = start + _TRAIN_SENTENCE_BYTES
            if end < len(doc):
                newline = doc.rfind(b"\n", start, end)
                end = newline + 1 if newline > start else end
            text = escape(doc[start:end])
            if text:
                yield text
            start = end


def _train_sentencepiece(spm: Any, docs: Iterable[bytes], train_bytes: int, vocab_size: int, model: Any) -> None:
    """The trainer settings: identity normalisation, byte fallback, every character covered (module docstring)."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_sentences(docs, train_bytes), model_writer=model,
        model_type="unigram", vocab_size=vocab_size, hard_vocab_limit=False,
        normalization_rule_name="identity", byte_fallback=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_by_whitespace=True,
        character_coverage=1.0, max_sentence_length=4 * _TRAIN_SENTENCE_BYTES,
        unk_id=0, eos_id=1, bos_id=-1, pad_id=-1, eos_piece=EOT,
        user_defined_symbols=[chr(ESC_BASE + b) for b in range(0x80, 0x100)],
        num_threads=2, minloglevel=2, seed_sentencepiece_size=200_000,
    )


__all__ = ["N_RESERVED", "UnigramTokenizer", "escape"]
