"""AC tokens (Lester et al. 2024 §3.3, "AC"): each document arithmetic-coded under M1, a byte-level LM, the bit
string cut into N-bit tokens. Also the parts shared with `equalinfo-ac` (equalinfo.py): M1, token packing,
saving.

    model:   M1's next-symbol distribution over 257 symbols, the 256 bytes and END = M1's end-of-text logit
             (m1.py), quantised by `arithmetic.cdf_from_logits` at `precision` bits (every symbol keeps
             probability >= 2^-precision, so any byte stays encodable whatever M1 says).
    context: M1 reads at most `context` symbols (default its training length): its context (KV cache)
             restarts from BOS every `context` symbols of a document, the coder does not. Lester et al. ran M1
             over 10,240 bytes with relative positions; our M1 has RoPE, which degrades past its training
             length, so a restart is cheaper. Both sides know the symbol count, so the restart needs no signal.
    encode:  bytes then END, one message (`arithmetic.Encoder`, at most ⌈Σ -log2 q⌉ + 2 bits), zero-padded to
             whole N-bit tokens, N in {8, 16}, big-endian. END makes the end of input unambiguous (see
             static_ac.py: decoding stops at END, the padding is never read as content).
    batch:   documents run side by side in the `rows` rows of one M1 batch, all at the same position: a row
             takes a new document only when every row restarts its context (every `context` symbols). The
             batch shape never changes, so a document's tokens do not depend on its neighbours (m1.py).

Token ids are 0..2^N - 1, end-of-text is 2^N. `exact_byte_lengths` is False (bits per byte uses the split's
byte share, base.py). Speed: M1 runs once per byte (about a forward of a 1-token batch of `rows` rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.arithmetic import (
    DEFAULT_PRECISION,
    DEFAULT_STATE_BITS,
    BitString,
    Decoder,
    Encoder,
    cdf_from_logits,
    information_bits,
)
from isoflop.data.tokenizers.base import BaseTokenizer, as_ids
from isoflop.data.tokenizers.m1 import M1, N_SYMBOLS, M1Stepper, describe, deterministic

TOKEN_BITS = (8, 16)
END = 256  # the END symbol: M1's end-of-text id
DEFAULT_ROWS = 16  # M1 batch rows: enough to amortise one forward's overhead on a CPU


def fill_rows(row_doc: list[int | None], queue: list[int]) -> list[int]:
    """Give each idle batch row (None) the next document of `queue` (popped from its end); the rows filled."""
    filled = []
    for r, d in enumerate(row_doc):
        if d is None and queue:
            row_doc[r] = queue.pop()
            filled.append(r)
    return filled


class NeuralCoderTokenizer(BaseTokenizer):
    """What `ac` and `equalinfo-ac` share: M1, N-bit tokens, the saved files."""

    exact_byte_lengths = False

    def __init__(self, m1: M1, *, token_bits: int = 8, precision: int = DEFAULT_PRECISION,
                 rows: int = DEFAULT_ROWS):
        if token_bits not in TOKEN_BITS:
            raise ConfigError("token_bits", f"must be one of {TOKEN_BITS}, got {token_bits}")
        if not 9 <= precision <= 20:
            raise ConfigError("precision", f"must be 9..20 (257 symbols need 2^precision >= 257), got {precision}")
        if rows < 1:
            raise ConfigError("rows", f"must be positive, got {rows}")
        self.m1, self.token_bits, self.precision, self.rows = m1, token_bits, precision, rows
        self.vocab_size = (1 << token_bits) + 1
        self.eot_id = 1 << token_bits

    def _cdfs(self, logits_RS: np.ndarray) -> np.ndarray:
        return cdf_from_logits(logits_RS, self.precision)

    def _to_ids(self, data: bytes) -> np.ndarray:
        """Bytes (a whole number of tokens) as big-endian N-bit ids."""
        return np.frombuffer(data, dtype=np.uint8 if self.token_bits == 8 else ">u2").astype(np.int64)

    def _to_bytes(self, ids: np.ndarray) -> bytes:
        return ids.astype(np.uint8 if self.token_bits == 8 else ">u2").tobytes()

    def _documents(self, ids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The content ids of each document in `ids` (split at end-of-text), checked to be in range."""
        arr = as_ids(ids)
        if arr.size and (arr.min() < 0 or arr.max() > self.eot_id):
            raise ValueError(f"{self.kind} token ids are 0..{self.eot_id}, got {int(arr.min())}..{int(arr.max())}")
        docs = [d[d != self.eot_id] for d in np.split(arr, np.flatnonzero(arr == self.eot_id))]
        return [d for d in docs if d.size]

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)  # counts content tokens; see base.py
        lengths[self.eot_id] = 0
        return lengths

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "token_bits": self.token_bits, "precision": self.precision, "rows": self.rows,
                "m1": describe(self.m1)}

    def files(self) -> dict[str, bytes]:
        return self.m1.files()

    @classmethod
    def _knobs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """The constructor's keyword arguments from a saved meta (kinds add their own)."""
        return {"token_bits": int(meta["token_bits"]), "precision": int(meta["precision"]), "rows": int(meta["rows"])}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> NeuralCoderTokenizer:
        m1 = M1.from_files(directory)
        try:
            out = cls(m1, **cls._knobs(meta))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(str(directory), f"bad {cls.kind} tokenizer meta: {e!r}") from None
        if (meta.get("vocab_size"), meta.get("eot_id")) != (out.vocab_size, out.eot_id):
            raise ConfigError(str(directory), f"{cls.kind} tokenizer meta does not match its knobs: {meta}")
        return out


class ACTokenizer(NeuralCoderTokenizer):
    """Arithmetic coding of each document under M1, as 8- or 16-bit tokens."""

    kind = "ac"

    def __init__(self, m1: M1, *, token_bits: int = 8, precision: int = DEFAULT_PRECISION,
                 rows: int = DEFAULT_ROWS, context: int | None = None):
        super().__init__(m1, token_bits=token_bits, precision=precision, rows=rows)
        self.context = context if context is not None else m1.train_length
        if self.context < 1:
            raise ConfigError("context", f"must be positive, got {self.context}")
        # The cheapest symbol costs log2(T / (T - 256)) bits: bounds decoding of foreign input (static_ac.py).
        self._min_bits = float(np.log2((1 << precision) / ((1 << precision) - (N_SYMBOLS - 1))))

    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_batch([data])[0]

    def encode_batch(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                     ) -> list[np.ndarray]:
        out = []
        for message, n_symbols, _ in self._code(docs, progress):
            n_bytes = -(-message.n_bits // self.token_bits) * (self.token_bits // 8)
            if n_symbols > self._symbol_limit(8 * n_bytes):
                raise ValueError("input codes to too few bits for decode's guard against foreign input")
            out.append(self._to_ids(message.data + b"\0" * (n_bytes - len(message.data))))
        return out

    def information_bits(self, docs: Sequence[bytes]) -> list[float]:
        """Σ -log2 q(x_t) of each document (bytes and END) under the quantised model the coder used."""
        return [info for _, _, info in self._code(docs)]

    def _code(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
              ) -> list[tuple[BitString, int, float]]:
        """(message, symbols, information bits) of each document, coded `rows` at a time (module docstring);
        `progress` gets the bytes coded so far after each context chunk."""
        symbols = [np.append(np.frombuffer(d, dtype=np.uint8).astype(np.int64), END) for d in docs]
        encoders = [Encoder(precision=self.precision) for _ in docs]
        info = [0.0] * len(docs)
        coded_bytes = 0
        row_doc: list[int | None] = [None] * self.rows  # document in each row, None: idle
        row_pos = [0] * self.rows
        queue = list(range(len(docs)))[::-1]
        stepper = M1Stepper(self.m1, rows=self.rows, capacity=self.context)
        with deterministic():
            while queue or any(d is not None for d in row_doc):
                for r in fill_rows(row_doc, queue):  # a context restart: idle rows take new documents
                    row_pos[r] = 0
                chunk_syms: list[list[int]] = [[] for _ in range(self.rows)]
                chunk_cdfs: list[list[np.ndarray]] = [[] for _ in range(self.rows)]
                logits_RS = stepper.start()
                for j in range(self.context):
                    cdfs_RC = self._cdfs(logits_RS)
                    feed_R = np.zeros(self.rows, dtype=np.int64)
                    for r, d in enumerate(row_doc):
                        if d is None or row_pos[r] >= symbols[d].size:
                            continue
                        s = int(symbols[d][row_pos[r]])
                        chunk_syms[r].append(s)
                        chunk_cdfs[r].append(cdfs_RC[r])
                        row_pos[r] += 1
                        feed_R[r] = s if s != END else 0
                    live = any(d is not None and row_pos[r] < symbols[d].size for r, d in enumerate(row_doc))
                    if not live or j == self.context - 1:
                        break
                    logits_RS = stepper.step(feed_R)
                for r, d in enumerate(row_doc):
                    if d is None or not chunk_syms[r]:
                        continue
                    cdfs = np.stack(chunk_cdfs[r])
                    encoders[d].encode_many(chunk_syms[r], cdfs)
                    info[d] += information_bits(chunk_syms[r], cdfs, self.precision)
                    coded_bytes += len(chunk_syms[r]) - (chunk_syms[r][-1] == END)
                    if row_pos[r] >= symbols[d].size:
                        row_doc[r] = None
                if progress is not None:
                    progress(coded_bytes)
        return [(enc.finish(), int(s.size), i) for enc, s, i in zip(encoders, symbols, info, strict=True)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        docs = self._documents(ids)
        decoders = [Decoder(BitString(self._to_bytes(d), d.size * self.token_bits), precision=self.precision)
                    for d in docs]
        limits = [self._symbol_limit(d.size * self.token_bits) for d in docs]
        out: list[list[int]] = [[] for _ in docs]
        done = [False] * len(docs)
        row_doc: list[int | None] = [None] * self.rows
        queue = list(range(len(docs)))[::-1]
        stepper = M1Stepper(self.m1, rows=self.rows, capacity=self.context)
        with deterministic():
            while queue or any(d is not None for d in row_doc):
                fill_rows(row_doc, queue)
                logits_RS = stepper.start()
                for j in range(self.context):
                    cdfs_RC = self._cdfs(logits_RS)
                    feed_R = np.zeros(self.rows, dtype=np.int64)
                    for r, d in enumerate(row_doc):
                        if d is None or done[d]:
                            continue
                        s = decoders[d].decode(cdfs_RC[r])
                        if s == END:
                            done[d] = True
                            continue
                        out[d].append(s)
                        feed_R[r] = s
                        if len(out[d]) >= limits[d]:
                            raise ValueError(f"no END within {limits[d]} symbols: not a message of this model")
                    if all(d is None or done[d] for d in row_doc) or j == self.context - 1:
                        break
                    logits_RS = stepper.step(feed_R)
                for r, d in enumerate(row_doc):
                    if d is not None and done[d]:
                        row_doc[r] = None
        return b"".join(bytes(np.asarray(o, dtype=np.uint8)) for o in out)

    def _symbol_limit(self, n_bits: int) -> int:
        """At most this many symbols decode from n_bits message bits (see static_ac.py's `_symbol_limit`)."""
        return int((n_bits + 2 * DEFAULT_STATE_BITS + 256) / self._min_bits) + 1

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "context": self.context}

    @classmethod
    def _knobs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return {**super()._knobs(meta), "context": int(meta["context"])}


__all__ = ["ACTokenizer", "END", "NeuralCoderTokenizer", "TOKEN_BITS"]
