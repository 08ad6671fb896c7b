"""The data configuration: where the text comes from, how it is split and cut, and which tokenizer reads it.

Pure Python (no numpy, no torch): plans and `--dry-run` read it without touching data. Nothing here looks at
the disk, since configs are built and checked before any data is read; the corpus reader (`corpus.py`) is
where a missing path becomes a `ConfigError` on `data.corpus`. The one exception: a saved tokenizer named by
`data.tokenizer.path`, whose small `tokenizer_meta.json` decides the vocabulary size the model is built with.
"""

from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path

from isoflop.config import Config, config, require
from isoflop.data.tokenizer_config import (  # re-exported: the tokenizer kinds are part of the data config
    ACTokenizerConfig,
    BPETokenizerConfig,
    BytePieceTokenizerConfig,
    ByteTokenizerConfig,
    EqualInfoACTokenizerConfig,
    GzipTokenizerConfig,
    NeuralACTokenizerConfig,
    StaticACTokenizerConfig,
    TokenizerConfig,
    UnigramTokenizerConfig,
    with_saved_tokenizer,
)


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
    bos_at_window_start: bool = False
    """Replace each training sequence's first input token by end-of-text, so the model learns to predict text
    that follows a fresh start in mid-document: what M1 meets at every EqualInfoAC window and AC context
    restart (tokenizers/equalinfo.py). Off: a start is seen only before a document's first token. For M1 it
    packs EqualInfoAC windows fuller, but M2 then learns them less (LOG.md, 2026-11-22, third session)."""
    tokenizer: TokenizerConfig = field(default_factory=ByteTokenizerConfig)
    """The tokenizer variant (`byte`, `bpe`, `unigram`, `bytepiece`, `gzip`, ...), trained for the run or
    loaded from `data.tokenizer.path`."""
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
        if self.tokenizer.path is not None:
            self.tokenizer = with_saved_tokenizer(self.tokenizer)

    def cache_root(self) -> Path:
        """The cache directory: `cache_dir`, else $ISOFLOP_CACHE, else ~/.cache/isoflop."""
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("ISOFLOP_CACHE")
        if env:
            return Path(env).expanduser()
        return Path.home() / ".cache" / "isoflop"


__all__ = [
    "DataConfig",
    "ACTokenizerConfig",
    "BPETokenizerConfig",
    "ByteTokenizerConfig",
    "BytePieceTokenizerConfig",
    "EqualInfoACTokenizerConfig",
    "GzipTokenizerConfig",
    "NeuralACTokenizerConfig",
    "StaticACTokenizerConfig",
    "TokenizerConfig",
    "UnigramTokenizerConfig",
    "with_saved_tokenizer",
]
