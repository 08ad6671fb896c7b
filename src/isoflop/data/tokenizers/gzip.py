"""GZip tokens (Lester et al. 2024, §3.3 "GZip"): a document's zlib stream cut into N-bit tokens.

    encode:  bytes --zlib.compress(level)--> stream (2-byte header, deflate data, Adler-32 footer: all kept,
             as in the paper) --> N-bit big-endian tokens, N in {8, 16}; an odd-length stream is padded with
             one zero byte for N = 16, so a document of c stream bytes gives ceil(8c / N) tokens.
    decode:  tokens --> bytes --zlib.decompressobj--> the document. The end is unambiguous without a length
             header: a zlib stream ends itself (the final deflate block flag, then the checksum), so the
             decompressor stops there and the pad byte is left over as `unused_data`.

Token ids are 0..2^N - 1, end-of-text is 2^N (vocabulary 2^N + 1). Between documents (end-of-text) each
document is its own stream, so `decode` of a shard slice of whole documents works. Tokens do not stand for
whole bytes, so `exact_byte_lengths` is False: bits per byte uses the split's bytes per token (see base.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.base import BaseTokenizer, as_ids

TOKEN_BITS = (8, 16)


class GzipTokenizer(BaseTokenizer):
    """zlib-compressed bytes as 8- or 16-bit tokens; nothing to train."""

    kind = "gzip"
    exact_byte_lengths = False

    def __init__(self, *, token_bits: int = 8, level: int = 9):
        if token_bits not in TOKEN_BITS:
            raise ConfigError("token_bits", f"must be one of {TOKEN_BITS}, got {token_bits}")
        if not 0 <= level <= 9:
            raise ConfigError("level", f"must be 0..9 (zlib), got {level}")
        self.token_bits, self.level = token_bits, level
        self.vocab_size = (1 << token_bits) + 1
        self.eot_id = 1 << token_bits

    def encode(self, data: bytes) -> np.ndarray:
        stream = zlib.compress(data, self.level)
        if self.token_bits == 8:
            return np.frombuffer(stream, dtype=np.uint8).astype(np.int64)
        if len(stream) % 2:
            stream += b"\0"  # the pad byte: after zlib's own end of stream, so decode ignores it
        return np.frombuffer(stream, dtype=">u2").astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        arr = as_ids(ids)
        if arr.size and (arr.min() < 0 or arr.max() > self.eot_id):
            raise ValueError(f"gzip token ids are 0..{self.eot_id}, got {int(arr.min())}..{int(arr.max())}")
        cuts = np.flatnonzero(arr == self.eot_id)
        out = []
        for doc in np.split(arr, cuts):  # each document's tokens, the end-of-text leading all but the first
            doc = doc[doc != self.eot_id]
            if doc.size:
                out.append(self._decompress(doc))
        return b"".join(out)

    def _decompress(self, ids: np.ndarray) -> bytes:
        stream = ids.astype(np.uint8 if self.token_bits == 8 else ">u2").tobytes()
        d = zlib.decompressobj()
        try:
            data = d.decompress(stream)
        except zlib.error as e:
            raise ValueError(f"not a zlib stream: {e}") from None
        if not d.eof:
            raise ValueError("truncated zlib stream")
        if len(d.unused_data) > (self.token_bits // 8 - 1) or d.unused_data.strip(b"\0"):
            raise ValueError(f"{len(d.unused_data)} bytes after the end of the zlib stream")
        return data

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)  # counts content tokens; see base.py
        lengths[self.eot_id] = 0
        return lengths

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "token_bits": self.token_bits, "level": self.level}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> GzipTokenizer:
        try:
            out = cls(token_bits=int(meta["token_bits"]), level=int(meta["level"]))
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise ConfigError(str(directory), f"bad gzip tokenizer meta {meta}: {e}") from None
        if meta.get("vocab_size") != out.vocab_size or meta.get("eot_id") != out.eot_id:
            raise ConfigError(str(directory), f"gzip tokenizer meta does not match this version: {meta}")
        return out


__all__ = ["GzipTokenizer", "TOKEN_BITS"]
