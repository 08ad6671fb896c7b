"""The tokenizer configurations: one small config class per kind (`data.tokenizer.kind`), each with its own
knobs and `build()`, and `with_saved_tokenizer` for `data.tokenizer.path`.

Pure Python (no numpy, no torch), like data/config.py; the one disk access is reading a saved tokenizer's small
`tokenizer_meta.json`, which decides the vocabulary size the model is built with.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isoflop.config import ConfigError, Variant, config, require

if TYPE_CHECKING:
    from isoflop.data.tokenizers.base import Tokenizer


# 256 byte-level symbols + 128 escape tokens for invalid UTF-8 + "<|endoftext|>" (see tokenizers/bpe.py).
BPE_MIN_VOCAB = 256 + 128 + 1
# <unk> + "<|endoftext|>" + 128 escapes + 256 byte pieces + at least one learned piece (tokenizers/unigram.py).
UNIGRAM_MIN_VOCAB = 2 + 128 + 256 + 1
# <pad>, <bos>, <eos> + the 256 single bytes (tokenizers/bytepiece.py).
BYTEPIECE_MIN_VOCAB = 3 + 256


@config
class TokenizerConfig(Variant, family=True):
    """How bytes become token ids: `data.tokenizer.kind` picks the variant."""

    default_kind = "byte"
    path: str | None = None
    """A saved tokenizer folder (`isoflop tokenizer train --out DIR`, or a run's tokenizer/): when set, the
    run loads it instead of building one, and its `tokenizer_meta.json` must name this `kind` (set
    `data.tokenizer.kind` to match). The folder's vocabulary knobs (vocab_size, token_bits, ..., and M1's
    shape) replace the config's; training knobs are unused. Shards are cached by the loaded tokenizer's fingerprint."""

    @property
    def needs_training(self) -> bool:
        """Whether `build` must be given documents to learn a vocabulary from."""
        return False

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        """The tokenizer; training kinds learn it from `docs` (training documents in corpus order)."""
        raise NotImplementedError

    def saved_knobs(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The fields a saved tokenizer's `tokenizer_meta.json` fixes: those it names (`path` aside)."""
        names = {f.name for f in dataclasses.fields(self)} - {"path"}
        return {k: v for k, v in meta.items() if k in names}


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
class UnigramTokenizerConfig(TokenizerConfig):
    """SentencePiece Unigram (Kudo 2018) through the `sentencepiece` library: identity normalisation, byte
    fallback, no dummy prefix, whitespace kept; lossless on arbitrary bytes (see tokenizers/unigram.py)."""

    kind = "unigram"
    vocab_size: int = 4096
    """Vocabulary size including <unk>, end-of-text, 128 escapes for invalid UTF-8 and 256 byte pieces. A
    small corpus may give fewer pieces, so a smaller vocabulary."""
    train_bytes: int = 8_000_000
    """At most this many corpus bytes (the first training documents in corpus order, the last one cut to
    fit) are used to learn the pieces."""

    def __post_init__(self) -> None:
        require(self.vocab_size >= UNIGRAM_MIN_VOCAB, "vocab_size",
                f"must be at least {UNIGRAM_MIN_VOCAB} (386 reserved pieces + 1), got {self.vocab_size}")
        require(self.train_bytes > 0, "train_bytes", f"must be positive, got {self.train_bytes}")

    @property
    def needs_training(self) -> bool:
        return True

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        if docs is None:
            raise ValueError("a unigram tokenizer must be trained: build() needs the training documents")
        from isoflop.data.tokenizers.unigram import UnigramTokenizer

        return UnigramTokenizer.train(docs, vocab_size=self.vocab_size, train_bytes=self.train_bytes)


@config
class BytePieceTokenizerConfig(TokenizerConfig):
    """BytePiece (Su 2023, kexue.fm/archives/9752): pieces chosen by a byte n-gram model, unigram Viterbi
    segmentation, no NFC so lossless on bytes (see tokenizers/bytepiece.py; pure Python, slow to encode)."""

    kind = "bytepiece"
    vocab_size: int = 4096
    """Most ids, including <pad>, <bos>, <eos> (end-of-text) and the 256 bytes; the pruning may stop below."""
    train_bytes: int = 2_000_000
    """At most this many corpus bytes (the first training documents, the last one cut to fit) are used to
    learn the pieces. Training is pure Python: about a few seconds per MB."""
    order: int = 6
    """Longest byte n-gram counted (the reference's default)."""
    min_count: int = 2
    """n-grams (n > 1) and pieces seen fewer times than this are dropped (the reference's default)."""
    max_piece_length: int = 36
    """Longest piece in bytes (the reference's default)."""
    ensure_unicode: bool = True
    """No multi-byte piece starts with a UTF-8 continuation byte 0x80..0xBF (the reference's default)."""

    def __post_init__(self) -> None:
        require(self.vocab_size >= BYTEPIECE_MIN_VOCAB, "vocab_size",
                f"must be at least {BYTEPIECE_MIN_VOCAB} (3 reserved ids + 256 bytes), got {self.vocab_size}")
        require(self.train_bytes > 0, "train_bytes", f"must be positive, got {self.train_bytes}")
        require(2 <= self.order <= 7, "order", f"must be 2..7, got {self.order}")
        require(self.min_count >= 1, "min_count", f"must be positive, got {self.min_count}")
        require(self.max_piece_length >= 1, "max_piece_length", f"must be positive, got {self.max_piece_length}")

    @property
    def needs_training(self) -> bool:
        return True

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        if docs is None:
            raise ValueError("a bytepiece tokenizer must be trained: build() needs the training documents")
        from isoflop.data.tokenizers.bytepiece import BytePieceTokenizer

        return BytePieceTokenizer.train(docs, vocab_size=self.vocab_size, train_bytes=self.train_bytes,
                                        order=self.order, min_count=self.min_count,
                                        max_piece_length=self.max_piece_length, ensure_unicode=self.ensure_unicode)


@config
class GzipTokenizerConfig(TokenizerConfig):
    """GZip tokens (Lester et al. 2024, §3.3): each document's zlib stream cut into `token_bits`-bit tokens.
    Nothing to train; tokens stand for fractions of bytes (bits/byte uses the split's share, base.py)."""

    kind = "gzip"
    token_bits: int = 8
    """Bits per token, 8 or 16: vocabulary 2^token_bits + end-of-text (Lester et al.'s v=256 and v=65k)."""
    level: int = 9
    """zlib compression level 0..9 (Lester et al. used zlib's default, 6)."""

    def __post_init__(self) -> None:
        require(self.token_bits in (8, 16), "token_bits", f"must be 8 or 16, got {self.token_bits}")
        require(0 <= self.level <= 9, "level", f"must be 0..9, got {self.level}")

    @property
    def vocab_size(self) -> int:
        """2^token_bits token values + end-of-text."""
        return (1 << self.token_bits) + 1

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        from isoflop.data.tokenizers.gzip import GzipTokenizer

        return GzipTokenizer(token_bits=self.token_bits, level=self.level)


@config
class CodedTokenizerConfig(TokenizerConfig):
    """What the arithmetic-coding kinds share: a bit stream cut into `token_bits`-bit tokens, coded with a
    CDF quantised to `precision` bits. Not a kind itself."""

    token_bits: int = 8
    """Bits per token, 8 or 16: vocabulary 2^token_bits + end-of-text (Lester et al.'s v=256 and v=65k)."""
    precision: int = 14
    """Bits of the quantised CDF: every symbol keeps probability >= 2^-precision (Lester et al. §2.4: 14)."""

    def __post_init__(self) -> None:
        require(self.token_bits in (8, 16), "token_bits", f"must be 8 or 16, got {self.token_bits}")
        require(9 <= self.precision <= 20, "precision",
                f"must be 9..20 (257 symbols need 2^precision >= 257), got {self.precision}")

    @property
    def vocab_size(self) -> int:
        """2^token_bits token values + end-of-text."""
        return (1 << self.token_bits) + 1

    @property
    def needs_training(self) -> bool:
        return True


@config
class StaticACTokenizerConfig(CodedTokenizerConfig):
    """StaticAC tokens (Lester et al. 2024, §3.3): each document arithmetic-coded under a byte-unigram model
    counted on the training documents, the bits cut into `token_bits`-bit tokens (tokenizers/static_ac.py)."""

    kind = "static-ac"
    train_bytes: int = 16_000_000
    """At most this many corpus bytes (the first training documents, the last one cut to fit) are counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.train_bytes > 0, "train_bytes", f"must be positive, got {self.train_bytes}")

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        if docs is None:
            raise ValueError("a static-ac tokenizer must be trained: build() needs the training documents")
        from isoflop.data.tokenizers.static_ac import StaticACTokenizer

        return StaticACTokenizer.train(docs, token_bits=self.token_bits, precision=self.precision,
                                       train_bytes=self.train_bytes)


@config
class NeuralACTokenizerConfig(CodedTokenizerConfig):
    """What the kinds driven by M1, a byte-level LM, share (Lester et al. 2024 §3.2; tokenizers/m1.py). M1 is
    trained by `isoflop tokenizer train` (a byte-tokenizer run with the m1_* knobs) or taken from `--m1 RUN`,
    and saved inside the tokenizer folder; a run uses that folder through `path`."""

    rows: int = 16
    """Documents (or windows) M1 runs side by side in one batch; part of the tokenizer (see m1.py)."""
    m1_steps: int = 300
    """Training steps of M1 when `isoflop tokenizer train` trains it (no --m1)."""
    m1_d_model: int = 128
    """M1's width when trained here (Lester et al.'s M1: 256)."""
    m1_n_layers: int = 2
    """M1's blocks when trained here (Lester et al.'s M1: 3)."""
    m1_seq_len: int = 256
    """M1's training context in bytes (Lester et al.: 1024)."""
    m1_batch_size: int = 16
    """M1's training batch, in sequences."""
    m1_lr: float = 0.003
    """M1's peak learning rate (AdamW, the trainer's default schedule)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rows >= 1, "rows", f"must be positive, got {self.rows}")
        for name in ("m1_steps", "m1_d_model", "m1_n_layers", "m1_seq_len", "m1_batch_size"):
            require(getattr(self, name) >= 1, name, f"must be positive, got {getattr(self, name)}")
        require(self.m1_lr > 0, "m1_lr", f"must be positive, got {self.m1_lr}")

    def saved_knobs(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Also M1's shape, which the folder's M1 fixes (meta["m1"], m1.describe); how it was trained (m1_steps,
        m1_batch_size, m1_lr) is not saved and stays as configured, unused."""
        m1 = meta.get("m1") if isinstance(meta.get("m1"), dict) else {}
        shape = {"m1_d_model": m1.get("d_model"), "m1_n_layers": m1.get("n_layers"),
                 "m1_seq_len": m1.get("train_length")}
        return {**super().saved_knobs(meta), **{k: v for k, v in shape.items() if v is not None}}

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        raise ConfigError("tokenizer.path", f"a {self.kind} tokenizer runs a trained M1: make one with "
                          f"`isoflop tokenizer train --kind {self.kind}` and set data.tokenizer.path to it")

    def build_with_m1(self, model: Any) -> Tokenizer:
        """The tokenizer over `model` (a byte-level TransformerLM)."""
        raise NotImplementedError


@config
class ACTokenizerConfig(NeuralACTokenizerConfig):
    """AC tokens (Lester et al. 2024 §3.3): each document arithmetic-coded under M1 with an END symbol, the
    bits cut into `token_bits`-bit tokens (tokenizers/neural_ac.py)."""

    kind = "ac"
    context: int | None = None
    """M1's context restarts every this many bytes of a document (the coder does not). None: M1's training
    length (m1_seq_len)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.context is None or self.context >= 1, "context", f"must be positive or null, got {self.context}")

    def build_with_m1(self, model: Any) -> Tokenizer:
        from isoflop.data.tokenizers.m1 import M1
        from isoflop.data.tokenizers.neural_ac import ACTokenizer

        return ACTokenizer(M1(model), token_bits=self.token_bits, precision=self.precision, rows=self.rows,
                           context=self.context)


@config
class EqualInfoACTokenizerConfig(NeuralACTokenizerConfig):
    """EqualInfoAC tokens (Lester et al. 2024 §3.3): W-bit windows of M1-driven arithmetic coding, M1 and the
    coder reset at every window, cut into `token_bits`-bit tokens (tokenizers/equalinfo.py)."""

    kind = "equalinfo-ac"
    token_bits: int = 16
    """Bits per token, 8 or 16, dividing window_bits (16 with window_bits 16: one token a window, v=65k)."""
    window_bits: int = 16
    """Bits per window W: 16, 24, 32, 64 or 128 (Lester et al. §3.3, App. A.1)."""
    max_window_bytes: int | None = None
    """Most bytes one window may hold (M1's context per window). None: 8 * window_bits."""
    decoding: str = "cell"
    """The window-end rule: "cell" (the default: the W bits name a grid cell and the window ends where its two
    ends decode apart; encoder-checked), "first-match" (the window keeps the shortest prefix whose message is
    the greedy one's; encoder-checked, but predictable bytes that add no bits move to the next window), or "paper" (Lester et al.'s greedy look-ahead, which can decode wrongly: only to
    measure its failure rate). See tokenizers/equalinfo.py."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.window_bits in (16, 24, 32, 64, 128), "window_bits",
                f"must be 16, 24, 32, 64 or 128, got {self.window_bits}")
        require(self.window_bits % self.token_bits == 0, "token_bits",
                f"must divide window_bits={self.window_bits}, got {self.token_bits}")
        require(self.precision + 2 <= self.window_bits, "precision",
                f"precision + 2 must fit in window_bits={self.window_bits}, got {self.precision}")
        require(self.max_window_bytes is None or self.max_window_bytes >= 1, "max_window_bytes",
                f"must be positive or null, got {self.max_window_bytes}")
        require(self.decoding in ("cell", "first-match", "paper"), "decoding",
                f"must be 'cell', 'first-match' or 'paper', got {self.decoding!r}")

    def build_with_m1(self, model: Any) -> Tokenizer:
        from isoflop.data.tokenizers.equalinfo import EqualInfoACTokenizer
        from isoflop.data.tokenizers.m1 import M1

        return EqualInfoACTokenizer(M1(model), window_bits=self.window_bits, token_bits=self.token_bits,
                                    precision=self.precision, rows=self.rows,
                                    max_window_bytes=self.max_window_bytes, decoding=self.decoding)


def with_saved_tokenizer(tok: TokenizerConfig) -> TokenizerConfig:
    """`tok` with the knobs of the saved tokenizer at `tok.path` (checked to be of `tok.kind`); keys of the
    ConfigErrors are relative to `data`."""
    assert tok.path is not None
    meta_path = Path(tok.path).expanduser() / "tokenizer_meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ConfigError("tokenizer.path", f"{tok.path} is not a saved tokenizer (no {meta_path.name})") from None
    except (OSError, ValueError) as e:
        raise ConfigError("tokenizer.path", f"cannot read {meta_path}: {e}") from None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind != tok.kind:
        raise ConfigError("tokenizer.kind", f"is {tok.kind!r} but {tok.path} holds a {kind!r} tokenizer; "
                          f"set data.tokenizer.kind={kind}")
    try:
        return dataclasses.replace(tok, **tok.saved_knobs(meta))
    except ConfigError as e:
        raise ConfigError("tokenizer.path", f"{meta_path} holds a bad {e.key}: {e.problem}") from None
