"""StaticAC tokens (Lester et al. 2024, §3.3 "StaticAC"): each document arithmetic-coded under a byte-unigram
model, the bit string cut into N-bit tokens.

    model:   257 symbols, bytes 0..255 and END (256). Counts over the training documents (END once a
             document), quantised to an integer CDF at `precision` bits (`arithmetic.quantize_cdf`: every
             symbol keeps frequency >= 1, so any byte stays encodable). Saved as that integer CDF
             (static_ac_model.json), never as floats, so a loaded tokenizer codes bit for bit the same.
    encode:  the document's bytes then END, coded by `arithmetic.Encoder` (exact, at most ⌈Σ -log2 q⌉ + 2
             bits); the message is padded with zero bits to whole N-bit tokens, N in {8, 16}, big-endian.
    decode:  tokens -> bits -> decode until END. END makes the end of input unambiguous: no length header,
             and the zero padding is never read as content, since the decoder stops at END and zero bits
             past the message do not move the point it names (see arithmetic.py).

Token ids are 0..2^N - 1, end-of-text is 2^N (vocabulary 2^N + 1). Each document is its own message, so
`decode` of a shard slice of whole documents works. Tokens stand for fractions of bytes, so
`exact_byte_lengths` is False: bits per byte uses the split's bytes per token (see base.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.arithmetic import (
    DEFAULT_PRECISION,
    BitString,
    Decoder,
    Encoder,
    check_cdf,
    quantize_cdf,
)
from isoflop.data.tokenizers.base import BaseTokenizer, as_ids

TOKEN_BITS = (8, 16)
END = 256  # the end-of-document symbol of the byte model
MODEL_FILE = "static_ac_model.json"


class StaticACTokenizer(BaseTokenizer):
    """Arithmetic coding under a fixed byte-unigram model, as 8- or 16-bit tokens."""

    kind = "static-ac"
    exact_byte_lengths = False

    def __init__(self, cdf: np.ndarray, *, token_bits: int = 8, precision: int = DEFAULT_PRECISION,
                 state_bits: int | None = None):
        if token_bits not in TOKEN_BITS:
            raise ConfigError("token_bits", f"must be one of {TOKEN_BITS}, got {token_bits}")
        try:
            self.cdf = check_cdf(cdf, precision)
            state_bits = Encoder(precision=precision, state_bits=state_bits).state_bits  # checked, resolved
        except ValueError as e:
            raise ConfigError("precision", str(e)) from None
        if self.cdf.shape != (END + 2,):
            raise ConfigError("cdf", f"the byte model needs a CDF of shape ({END + 2},), got {self.cdf.shape}")
        self.token_bits, self.precision, self.state_bits = token_bits, precision, state_bits
        self.vocab_size = (1 << token_bits) + 1
        self.eot_id = 1 << token_bits
        # Cheapest symbol: a run of it costs at least this many bits a byte; bounds decode of foreign input.
        self._min_bits = float(np.log2((1 << precision) / np.diff(self.cdf).max()))

    @classmethod
    def train(cls, docs: Iterable[bytes], *, token_bits: int = 8, precision: int = DEFAULT_PRECISION,
              train_bytes: int = 16_000_000) -> StaticACTokenizer:
        """Count bytes over the first `train_bytes` bytes of `docs` (the last document cut to fit), END once
        per document read, and quantise the counts."""
        counts = np.zeros(END + 1, dtype=np.int64)
        budget = train_bytes
        for doc in docs:
            if budget <= 0:
                break
            piece = doc[:budget]
            counts[:END] += np.bincount(np.frombuffer(piece, dtype=np.uint8), minlength=END)
            counts[END] += 1
            budget -= len(piece)
        if counts[END] == 0:
            counts[END] = 1  # no documents: the uniform floor of quantize_cdf still codes every byte
        return cls(quantize_cdf(counts.astype(np.float64), precision), token_bits=token_bits, precision=precision)

    def encode(self, data: bytes) -> np.ndarray:
        symbols = np.empty(len(data) + 1, dtype=np.int64)
        symbols[:-1] = np.frombuffer(data, dtype=np.uint8)
        symbols[-1] = END
        enc = Encoder(precision=self.precision, state_bits=self.state_bits)
        enc.encode_many(symbols, self.cdf)
        message = enc.finish()
        n_bytes = -(-message.n_bits // self.token_bits) * (self.token_bits // 8)  # whole tokens, zero padded
        if symbols.size > self._symbol_limit(8 * n_bytes):  # see _symbol_limit: no text of real statistics
            raise ValueError("input codes to too few bits for decode's guard against foreign input")
        stream = message.data + b"\0" * (n_bytes - len(message.data))
        return np.frombuffer(stream, dtype=np.uint8 if self.token_bits == 8 else ">u2").astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        arr = as_ids(ids)
        if arr.size and (arr.min() < 0 or arr.max() > self.eot_id):
            raise ValueError(f"static-ac token ids are 0..{self.eot_id}, got {int(arr.min())}..{int(arr.max())}")
        out = []
        for doc in np.split(arr, np.flatnonzero(arr == self.eot_id)):
            doc = doc[doc != self.eot_id]
            if doc.size:
                out.append(self._decode_document(doc))
        return b"".join(out)

    def _decode_document(self, ids: np.ndarray) -> bytes:
        stream = ids.astype(np.uint8 if self.token_bits == 8 else ">u2").tobytes()
        dec = Decoder(BitString(stream, 8 * len(stream)), precision=self.precision, state_bits=self.state_bits)
        symbols = dec.decode_until(self.cdf, END, self._symbol_limit(8 * len(stream)))
        return symbols[:-1].astype(np.uint8).tobytes()

    def _symbol_limit(self, n_bits: int) -> int:
        """At most this many symbols are decoded from n_bits message bits. Input no encoder wrote can name a
        point that never reaches END (e.g. zeros after the bits: NUL forever), so decode needs a bound. A real
        message of n symbols has about n * (>= _min_bits) bits, fewer only by the pending bits the coder held at
        the end (the interval straddling 1/2 for that many halvings); `encode` refuses the (contrived) input
        that would pass the bound rather than write a message decode would refuse."""
        return int((n_bits + 2 * self.state_bits + 256) / self._min_bits) + 1

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)  # counts content tokens; see base.py
        lengths[self.eot_id] = 0
        return lengths

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "token_bits": self.token_bits, "precision": self.precision}

    def files(self) -> dict[str, bytes]:
        model = {"precision": self.precision, "state_bits": self.state_bits, "cdf": self.cdf.tolist()}
        return {MODEL_FILE: (json.dumps(model, sort_keys=True) + "\n").encode()}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> StaticACTokenizer:
        path = directory / MODEL_FILE
        try:
            model = json.loads(path.read_text())
            out = cls(np.asarray(model["cdf"], dtype=np.int64), token_bits=int(meta["token_bits"]),
                      precision=int(model["precision"]), state_bits=int(model["state_bits"]))
        except FileNotFoundError:
            raise ConfigError(str(path), "missing: not a saved static-ac tokenizer") from None
        except (OSError, KeyError, TypeError, ValueError, ConfigError) as e:
            raise ConfigError(str(path), f"bad static-ac model: {e}") from None
        if (meta.get("vocab_size"), meta.get("eot_id"), meta.get("precision")) != (
                out.vocab_size, out.eot_id, out.precision):
            raise ConfigError(str(directory), f"static-ac tokenizer meta does not match its model: {meta}")
        return out


__all__ = ["END", "StaticACTokenizer", "TOKEN_BITS"]
