"""The reversible escape that lets string-based tokenizer libraries (`tokenizers`, `sentencepiece`) take
arbitrary bytes, and the decoding they share. The scheme is described in bpe.py's module docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from isoflop.data.tokenizers.base import BaseTokenizer, as_ids

ESC_BASE = 0xF700  # byte b (0x80..0xFF) <-> escape char U+F700+b, i.e. U+F780..U+F7FF
_SURROGATE = 0xDC00  # Python's surrogateescape writes byte b as U+DC00+b
N_ESCAPES = 128
# Every char of U+F780..U+F7FF is encoded EF 9E xx or EF 9F xx: a byte search finds them far faster
# than a str.translate pass, which only text that needs it pays for.
ESCAPE_LEADS = (b"\xef\x9e", b"\xef\x9f")


@cache
def escape_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for b in range(0x80, 0x100):
        table[_SURROGATE + b] = chr(ESC_BASE + b)
        genuine = chr(ESC_BASE + b)
        table[ESC_BASE + b] = "".join(chr(ESC_BASE + x) for x in genuine.encode("utf-8"))
    return table


@cache
def _unescape_table() -> dict[int, int]:
    return {ESC_BASE + b: _SURROGATE + b for b in range(0x80, 0x100)}


def escape(data: bytes) -> str:
    """Arbitrary bytes as a valid string for `tokenizers` (see the module docstring)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").translate(escape_table())
    if any(lead in data for lead in ESCAPE_LEADS):
        return text.translate(escape_table())
    return text


def unescape(utf8: bytes) -> bytes:
    """The original bytes from the UTF-8 bytes of escaped text; total on any input (never raises)."""
    if not any(lead in utf8 for lead in ESCAPE_LEADS):
        return utf8  # no escapes: decoding and re-encoding with surrogateescape is the identity
    text = utf8.decode("utf-8", "surrogateescape").translate(_unescape_table())
    return text.encode("utf-8", "surrogateescape")


class EscapedTableTokenizer(BaseTokenizer):
    """A tokenizer whose id i decodes to the escaped UTF-8 bytes `self._table[i]`."""

    _table: list[bytes]

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        arr = as_ids(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1}, got {int(arr.min())}..{int(arr.max())}")
        table = self._table
        return unescape(b"".join([table[i] for i in arr.tolist()]))

    def token_byte_lengths(self) -> np.ndarray:
        return np.array([len(unescape(t)) for t in self._table], dtype=np.int64)
