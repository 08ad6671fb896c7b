"""The byte tokenizer: token id = byte value (0..255), end-of-text = 256, vocabulary 257."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.base import BaseTokenizer, as_ids


class ByteTokenizer(BaseTokenizer):
    """Raw bytes: lossless by construction, 1 byte per token, nothing to train or store but the meta."""

    kind = "byte"
    vocab_size = 257
    eot_id = 256

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)  # (n,)

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        arr = as_ids(ids)
        arr = arr[arr != self.eot_id]
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"byte token ids are 0..256, got {int(arr.min())}..{int(arr.max())}")
        return arr.astype(np.uint8).tobytes()

    def pieces(self, data: bytes, size: int) -> Iterator[bytes]:
        for start in range(0, max(len(data), 1), max(size, 1)):
            yield data[start:start + size]

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        lengths[self.eot_id] = 0
        return lengths

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> ByteTokenizer:
        if meta.get("vocab_size") != cls.vocab_size or meta.get("eot_id") != cls.eot_id:
            raise ConfigError(str(directory), f"byte tokenizer meta does not match this version: {meta}")
        return cls()
