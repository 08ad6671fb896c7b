"""The tokenizer protocol every kind implements, a base class with the shared parts, and `load_saved_tokenizer`.

Contract (all kinds): lossless on arbitrary bytes, `decode(encode(x)) == x` for every `bytes` value (invalid
UTF-8, NUL, all 256 values); `encode` never emits the end-of-text id, which only the shard writer puts between
documents; `decode` drops it. `token_byte_lengths()[i]` is how many input bytes token i stands for, so bits
per byte = total loss in bits / sum of the lengths of the tokens scored.

Kinds whose tokens do not stand for whole bytes (compressed text: gzip, static and neural arithmetic coding)
set `exact_byte_lengths = False`. Their `token_byte_lengths()` is 1 for every id but end-of-text (0), i.e. it
counts content tokens, and bits per byte converts with the split's exact share from the shard meta: each
content token stands for n_bytes / (n_tokens - n_documents) bytes (`PreparedData.byte_share`). An evaluation
over a whole split thus divides by exactly its document bytes; over part of a split it uses the mean share.

A saved tokenizer is a folder holding `tokenizer_meta.json` (`kind`, `vocab_size`, `eot_id`) and whatever files
the kind needs; `fingerprint()` is the sha256 of exactly those files, so it names the saved tokenizer. Its
`kind` is looked up in the `TokenizerConfig` family (data/tokenizer_config.py), the one list of kinds, which
names each kind's tokenizer class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizer_config import META_FILE, TokenizerConfig


@runtime_checkable
class Tokenizer(Protocol):
    """What the shard writer, the evaluator and the CLI rely on."""

    kind: str
    vocab_size: int
    eot_id: int
    exact_byte_lengths: bool  # False: tokens stand for fractions of bytes (see the module docstring)

    def encode(self, data: bytes) -> np.ndarray:
        """Token ids (int64, shape (n,)) of `data`; never contains `eot_id`."""
        ...

    def encode_batch(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                     ) -> list[np.ndarray]:
        """`[encode(d) for d in docs]`, faster where the kind can batch. Slow kinds call `progress`, where
        given, now and then with the bytes of `docs` coded so far; fast kinds need not call it."""
        ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The bytes of `ids`; end-of-text ids are dropped."""
        ...

    def pieces(self, data: bytes, size: int) -> Iterator[bytes]:
        """`data` cut into pieces of about `size` bytes (at least one piece) whose encodings, concatenated,
        equal `encode(data)`: lets a huge document be tokenized in bounded memory."""
        ...

    def token_byte_lengths(self) -> np.ndarray:
        """Shape (vocab_size,) int64: input bytes each token stands for (0 for end-of-text)."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer's files (and tokenizer_meta.json) into `directory`, creating it."""
        ...

    def fingerprint(self) -> str:
        """sha256 hex of the files `save` writes."""
        ...


class BaseTokenizer:
    """Shared parts: subclasses set kind/vocab_size/eot_id, implement encode/decode/token_byte_lengths,
    `files()` (the saved files but the meta) and `from_files()`, and may override `pieces`."""

    kind: str = ""
    vocab_size: int = 0
    eot_id: int = 0
    exact_byte_lengths: bool = True

    def encode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def encode_batch(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                     ) -> list[np.ndarray]:
        return [self.encode(d) for d in docs]

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        raise NotImplementedError

    def pieces(self, data: bytes, size: int) -> Iterator[bytes]:
        yield data  # always exact; kinds with known safe cut points override this

    def token_byte_lengths(self) -> np.ndarray:
        raise NotImplementedError

    def files(self) -> dict[str, bytes]:
        """The kind's own files by name (tokenizer_meta.json is added by `all_files`)."""
        return {}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> BaseTokenizer:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eot_id": self.eot_id}

    def all_files(self) -> dict[str, bytes]:
        files = dict(self.files())
        files[META_FILE] = (json.dumps(self.meta(), indent=2, sort_keys=True) + "\n").encode()
        return files

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.all_files().items():
            (directory / name).write_bytes(content)

    def fingerprint(self) -> str:
        return files_fingerprint(self.all_files())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, eot_id={self.eot_id})"


def files_fingerprint(files: dict[str, bytes]) -> str:
    """sha256 over (name, length, content) of each file in name order: equal iff the saved folders are."""
    h = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        h.update(f"{name}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def load_saved_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer saved in the tokenizer folder `folder` by `save` (not a run directory: a run's is its
    tokenizer/ folder), of the class the `TokenizerConfig` family names for its kind."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(folder), f"not a saved tokenizer (no {META_FILE})") from None
    except (OSError, ValueError) as e:
        raise ConfigError(str(meta_path), f"cannot read: {e}") from None
    try:
        kind_config = TokenizerConfig.variant_class(meta.get("kind") if isinstance(meta, dict) else None)
    except ConfigError as e:  # the family's one "did you mean"; the key names the file
        raise ConfigError(str(meta_path), e.problem) from None
    return kind_config.tokenizer_type().from_files(folder, meta)


def as_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """`ids` as a 1-D int64 array (accepts lists, numpy arrays of any int dtype, torch tensors via numpy)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr.astype(np.int64, copy=False)


__all__ = ["BaseTokenizer", "META_FILE", "Tokenizer", "as_ids", "files_fingerprint", "load_saved_tokenizer"]
