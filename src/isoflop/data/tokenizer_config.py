"""The tokenizer configurations: one small config class per kind (`data.tokenizer.kind`), each with its own
knobs and `build()`, and `with_saved_tokenizer` for `data.tokenizer.path`.

This family is the one list of tokenizer kinds: each member names its tokenizer class (`tokenizer_class`,
imported on first use), and a saved tokenizer folder is loaded by looking its `kind` up here
(`tokenizers/base.py: load_saved_tokenizer`). A new kind is a config class in this file plus its tokenizer
module.

Pure Python (no numpy, no torch), like data/config.py; the one disk access is reading a saved tokenizer's small
`tokenizer_meta.json`, which decides the vocabulary size the model is built with.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from isoflop.config import ConfigError, Variant, config, require

if TYPE_CHECKING:
    from isoflop.data.tokenizers.base import Tokenizer


# The file of a saved tokenizer folder that names its kind and knobs (written by tokenizers/base.py's `save`).
META_FILE = "tokenizer_meta.json"
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
    #: "module:Class" of the tokenizer this kind builds and loads (`tokenizer_type`); imported on first use.
    tokenizer_class: ClassVar[str] = ""
    path: str | None = None
    """A saved tokenizer folder (`isoflop tokenizer train --out DIR`, or a run's tokenizer/): when set, the
    run loads it instead of building one, and its `tokenizer_meta.json` must name this `kind` (set
    `data.tokenizer.kind` to match). The folder's vocabulary knobs (vocab_size, token_bits, ...) replace the
    config's; training knobs are unused. Shards are cached by the loaded tokenizer's fingerprint."""

    @classmethod
    def tokenizer_type(cls) -> Any:
        """The tokenizer class of this kind (a `BaseTokenizer` subclass with `from_files`), imported now."""
        module, _, name = cls.tokenizer_class.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def needs_training(self) -> bool:
        """Whether `build` must be given documents to learn a vocabulary from."""
        return False

    @property
    def needs_m1(self) -> bool:
        """Whether the tokenizer runs M1, a byte-level model: built by `build_with_m1(model)`, not `build`."""
        return False

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        """The tokenizer; training kinds learn it from `docs` (training documents in corpus order)."""
        raise NotImplementedError

    def saved_knobs(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The fields a saved tokenizer's `tokenizer_meta.json` fixes: those it names (`path` aside)."""
        names = {f.name for f in dataclasses.fields(self)} - {"path"}
        return {k: v for k, v in meta.items() if k in names}

    def shard_key(self, saved: Tokenizer | None) -> dict[str, Any]:
        """What of this config decides the tokens, as the shard cache key holds it (shards.py): `to_dict()`,
        `path` replaced by the fingerprint of the tokenizer `saved` there (a folder is keyed by what it
        holds, not where it lies). A changed key rebuilds every user's shards: keep it stable."""
        key = self.to_dict()
        if saved is not None:
            key["path"] = {"fingerprint": saved.fingerprint()}
        return key


@config
class ByteTokenizerConfig(TokenizerConfig):
    """One token per byte (ids 0..255) plus end-of-text: no training, no knobs."""

    kind = "byte"
    tokenizer_class = "isoflop.data.tokenizers.byte:ByteTokenizer"

    @property
    def vocab_size(self) -> int:
        """256 byte values + end-of-text."""
        return 257

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        return self.tokenizer_type()()


@config
class BPETokenizerConfig(TokenizerConfig):
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant, Radford et al. 2019) trained with
    the Hugging Face `tokenizers` library, lossless on arbitrary bytes."""

    kind = "bpe"
    tokenizer_class = "isoflop.data.tokenizers.bpe:BPETokenizer"
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
        return self.tokenizer_type().train(docs, vocab_size=self.vocab_size, train_bytes=self.train_bytes)


@config
class UnigramTokenizerConfig(TokenizerConfig):
    """SentencePiece Unigram (Kudo 2018) through the `sentencepiece` library: identity normalisation, byte
    fallback, no dummy prefix, whitespace kept; lossless on arbitrary bytes (see tokenizers/unigram.py)."""

    kind = "unigram"
    tokenizer_class = "isoflop.data.tokenizers.unigram:UnigramTokenizer"
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
        return self.tokenizer_type().train(docs, vocab_size=self.vocab_size, train_bytes=self.train_bytes)


@config
class BytePieceTokenizerConfig(TokenizerConfig):
    """BytePiece (Su 2023, kexue.fm/archives/9752): pieces chosen by a byte n-gram model, unigram Viterbi
    segmentation, no NFC so lossless on bytes (see tokenizers/bytepiece.py; pure Python, slow to encode)."""

    kind = "bytepiece"
    tokenizer_class = "isoflop.data.tokenizers.bytepiece:BytePieceTokenizer"
    vocab_size: int = 4096
    """Most ids, including <pad>, <bos>, <eos> (end-of-text) and the 256 bytes; the pruning may stop below."""
    train_bytes: int = 2_000_000
    """At most this many corpus bytes (the first training documents, the last one cut to fit) are used to
    learn the pieces. Training is pure Python: about a few seconds per MB."""
    order: int = 6
    """Longest byte n-gram counted (the default of `Trainer` in github.com/bojone/bytepiece)."""
    min_count: int = 2
    """n-grams (n > 1) and pieces seen fewer times than this are dropped (bojone/bytepiece's default)."""
    max_piece_length: int = 36
    """Longest piece in bytes (bojone/bytepiece's default)."""
    ensure_unicode: bool = True
    """No multi-byte piece starts with a UTF-8 continuation byte 0x80..0xBF (bojone/bytepiece's default)."""

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
        return self.tokenizer_type().train(docs, vocab_size=self.vocab_size, train_bytes=self.train_bytes,
                                           order=self.order, min_count=self.min_count,
                                           max_piece_length=self.max_piece_length,
                                           ensure_unicode=self.ensure_unicode)


@config
class GzipTokenizerConfig(TokenizerConfig):
    """GZip tokens (Lester et al. 2024, §3.3): each document's zlib stream cut into `token_bits`-bit tokens.
    Nothing to train; tokens stand for fractions of bytes (bits/byte uses the split's share, base.py)."""

    kind = "gzip"
    tokenizer_class = "isoflop.data.tokenizers.gzip:GzipTokenizer"
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
        return self.tokenizer_type()(token_bits=self.token_bits, level=self.level)


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
    tokenizer_class = "isoflop.data.tokenizers.static_ac:StaticACTokenizer"
    train_bytes: int = 16_000_000
    """At most this many corpus bytes (the first training documents, the last one cut to fit) are counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.train_bytes > 0, "train_bytes", f"must be positive, got {self.train_bytes}")

    def build(self, docs: Iterable[bytes] | None = None) -> Tokenizer:
        if docs is None:
            raise ValueError("a static-ac tokenizer must be trained: build() needs the training documents")
        return self.tokenizer_type().train(docs, token_bits=self.token_bits, precision=self.precision,
                                           train_bytes=self.train_bytes)


# The M1 knobs NeuralACTokenizerConfig held until 2026-12 (issue 13): how `isoflop tokenizer train` trained M1
# (now that command's own options, cli/tokenizer.py `M1Training`) and M1's shape, which a run never read (the
# folder's m1_config.json fixes M1). Shards cached while they were here hold them in their keys, at these
# values (see `shard_key`).
_RETIRED_M1_KNOBS = {"m1_steps": 300, "m1_d_model": 128, "m1_n_layers": 2, "m1_seq_len": 256, "m1_batch_size": 16,
                     "m1_lr": 0.003}


@config
class NeuralACTokenizerConfig(CodedTokenizerConfig):
    """What the kinds driven by M1, a byte-level LM, share (Lester et al. 2024 §3.2; tokenizers/m1.py). M1 is
    trained by `isoflop tokenizer train` (a byte-tokenizer run; its `--set m1_*` options) or taken from
    `--m1 RUN`, and saved inside the tokenizer folder; a run uses that folder through `path`, and M1's shape
    is the folder's (its tokenizer_meta.json says it under "m1")."""

    retired_keys = frozenset(_RETIRED_M1_KNOBS)  # 2026-12: see _RETIRED_M1_KNOBS
    rows: int = 16
    """Documents (or windows) M1 runs side by side in one batch; part of the tokenizer (see m1.py)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rows >= 1, "rows", f"must be positive, got {self.rows}")

    @property
    def needs_m1(self) -> bool:
        return True

    def shard_key(self, saved: Tokenizer | None) -> dict[str, Any]:
        """Also the retired M1 knobs, so that shards cached before they retired stay valid: M1's shape as the
        folder gives it (what `with_saved_tokenizer` then filled in), how it trained at the values every
        run then held (they were never read by a run, so nobody had reason to set them there)."""
        m1 = saved.meta().get("m1", {}) if saved is not None else {}
        shape = {"m1_d_model": m1.get("d_model"), "m1_n_layers": m1.get("n_layers"),
                 "m1_seq_len": m1.get("train_length")}
        return {**super().shard_key(saved), **_RETIRED_M1_KNOBS,
                **{k: v for k, v in shape.items() if v is not None}}

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
    tokenizer_class = "isoflop.data.tokenizers.neural_ac:ACTokenizer"
    context: int | None = None
    """M1's context restarts every this many bytes of a document (the coder does not). None: M1's training
    length (its `train_length`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.context is None or self.context >= 1, "context", f"must be positive or null, got {self.context}")

    def build_with_m1(self, model: Any) -> Tokenizer:
        from isoflop.data.tokenizers.m1 import M1

        return self.tokenizer_type()(M1(model), token_bits=self.token_bits, precision=self.precision,
                                     rows=self.rows, context=self.context)


@config
class EqualInfoACTokenizerConfig(NeuralACTokenizerConfig):
    """EqualInfoAC tokens (Lester et al. 2024 §3.3): W-bit windows of M1-driven arithmetic coding, M1 and the
    coder reset at every window, cut into `token_bits`-bit tokens (tokenizers/equalinfo.py)."""

    kind = "equalinfo-ac"
    tokenizer_class = "isoflop.data.tokenizers.equalinfo:EqualInfoACTokenizer"
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
        from isoflop.data.tokenizers.m1 import M1

        return self.tokenizer_type()(M1(model), window_bits=self.window_bits, token_bits=self.token_bits,
                                     precision=self.precision, rows=self.rows,
                                     max_window_bytes=self.max_window_bytes, decoding=self.decoding)


def with_saved_tokenizer(tok: TokenizerConfig) -> TokenizerConfig:
    """`tok` with the knobs of the saved tokenizer at `tok.path` (checked to be of `tok.kind`); keys of the
    ConfigErrors are relative to `data`."""
    assert tok.path is not None
    meta_path = Path(tok.path).expanduser() / META_FILE
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
