"""The data configuration: where the text comes from, how it is split and cut, and which tokenizer reads it.

Pure Python (no numpy, no torch): plans and `--dry-run` read it without touching data. Nothing here looks at
the disk, since configs are built and checked before any data is read; the corpus reader (`corpus.py`) is
where a missing path becomes a `ConfigError` on `data.corpus`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from isoflop.config import Config, Variant, config, require

if TYPE_CHECKING:
    from isoflop.data.tokenizers.base import Tokenizer


# 256 byte-level symbols + 128 escape tokens for invalid UTF-8 + "<|endoftext|>" (see tokenizers/bpe.py).
BPE_MIN_VOCAB = 256 + 128 + 1


@config
class TokenizerConfig(Variant, family=True):
    """How bytes become token ids: `data.tokenizer.kind` picks the variant."""

    default_kind = "byte"

    @property
    def needs_training(self) -> bool:
        """Whether `build` must be given documents to learn a vocabulary from."""
        return False

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        """The tokenizer; training kinds learn it from `docs` (training documents in corpus order)."""
        raise NotImplementedError


@config
class ByteTokenizerConfig(TokenizerConfig):
    """One token per byte (ids 0..255) plus end-of-text: no training, no knobs."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        """256 byte values + end-of-text."""
        return 257

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        from isoflop.data.tokenizers.byte import ByteTokenizer

        return ByteTokenizer()


@config
class BPETokenizerConfig(TokenizerConfig):
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant, Radford et al. 2019) trained with
    the Hugging Face `tokenizers` library, lossless on arbitrary bytes."""

    kind = "bpe"
    vocab_size: int = 4096
    """Vocabulary size including special tokens: 256 bytes, 128 escapes for invalid UTF-8, end-of-text, and
    the learned merges. A small corpus may learn fewer merges, giving a smaller vocabulary."""
    train_bytes: int = 8_000_000
    """At most this many corpus bytes (the first training documents in corpus order, the last one cut to
    fit) are used to learn the merges."""

    def __post_init__(self) -> None:
        require(self.vocab_size >= BPE_MIN_VOCAB, "vocab_size",
                f"must be at least {BPE_MIN_VOCAB} (256 bytes + 128 escapes + end-of-text), got {self.vocab_size}")
        require(self.train_bytes > 0, "train_bytes", f"must be positive, got {self.train_bytes}")

    @property
    def needs_training(self) -> bool:
        return True

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        if docs is None:  # a caller's bug, not a bad config value
            raise ValueError("a bpe tokenizer must be trained: build() needs the training documents")
        from isoflop.data.tokenizers.bpe import BPETokenizer

        return BPETokenizer.train(docs, vocab_size=self.vocab_size, train_bytes=self.train_bytes)


@config
class DataConfig(Config):
    """The training text, its train/validation split, the sequence length and the tokenizer."""

    corpus: str = "stdlib"
    """A file (.txt: one document; .jsonl: one document per line), a folder (files matching `glob`), or
    "stdlib": every .py file of this Python's standard library, one document each."""
    glob: str = "**/*.txt"
    """Pattern of the files taken from a folder corpus, relative to it; each is read by its suffix."""
    text_field: str = "text"
    """The string field holding a document's text in each line of a .jsonl file."""
    max_bytes: int | None = None
    """Read at most this many corpus bytes: whole documents in corpus order, stopping before the first one
    that would exceed it. None: the whole corpus."""
    val_fraction: float = 0.01
    """Fraction of documents held out for validation, each chosen by a hash of its index (at least one)."""
    seq_len: int = 256
    """Tokens per training sequence (the model's context length during training)."""
    tokenizer: TokenizerConfig = field(default_factory=ByteTokenizerConfig)
    """The tokenizer variant (`byte`, `bpe`)."""
    cache_dir: str | None = None
    """Where prepared token shards are cached. None: $ISOFLOP_CACHE, else ~/.cache/isoflop."""

    def __post_init__(self) -> None:
        require(bool(self.corpus), "corpus", "must name a file, a folder, or 'stdlib'")
        require(bool(self.glob), "glob", "must not be empty")
        require(bool(self.text_field), "text_field", "must not be empty")
        require(self.max_bytes is None or self.max_bytes > 0, "max_bytes",
                f"must be positive or null, got {self.max_bytes}")
        require(0.0 < self.val_fraction < 1.0, "val_fraction",
                f"must be strictly between 0 and 1, got {self.val_fraction}")
        require(self.seq_len > 0, "seq_len", f"must be positive, got {self.seq_len}")
        require(self.cache_dir is None or bool(self.cache_dir), "cache_dir", "must be a path or null")

    def cache_root(self) -> Path:
        """The cache directory: `cache_dir`, else $ISOFLOP_CACHE, else ~/.cache/isoflop."""
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("ISOFLOP_CACHE")
        if env:
            return Path(env).expanduser()
        return Path.home() / ".cache" / "isoflop"


__all__ = ["BPETokenizerConfig", "ByteTokenizerConfig", "DataConfig", "TokenizerConfig"]
