"""Exact integer arithmetic coding with a per-step model: the coder under the `static-ac`, `ac` and
`equalinfo-ac` tokenizers.

**Model.** The caller gives, for every symbol, an integer CDF over the alphabet (int64 (K+1,), 0 = c[0] <
c[1] < ... < c[K] = 2^precision), static or new at each step (a language model's prediction). Float
probabilities or logits become such a CDF with `quantize_cdf` / `cdf_from_logits`, which give every symbol
frequency >= 1 (probability >= 2^-precision, precision β = 14 as in Lester et al. 2024 §2.4). The quantised
model is q(s) = (c[s+1] - c[s]) / 2^precision; the quantisation costs at most log2(T / (T - K)) bits a symbol
(0.023 bits for K = 257, T = 2^14), since every symbol first gets its frequency 1.

**Determinism of floats.** Encoder and decoder must build bit-identical CDFs from the same numbers. Inputs are
cast to float64 (exact for float16/bfloat16/float32, so equal values give equal CDFs whatever their dtype),
then only IEEE-754 basic operations are used, element-wise or in the fixed left-to-right order of
`np.cumsum`, never a reduction whose order depends on the library (torch or numpy pairwise sums) and never a
platform `exp`: `cdf_from_logits` computes exp with its own polynomial from +, *, floor and ldexp. So a row
quantised alone and inside a batch give the same CDF, on any IEEE-754 machine.

**Coder.** Witten–Neal–Cleary arithmetic coding with pending bits (`ac_kernels.py`), integer state of
`state_bits` P bits (default 48, or 62 - precision if less; precision + 2 <= P <= 62 - precision so that
R * c <= 2^(P + precision) fits in int64). Cutting the interval with floor(R * c / T) loses less than
2^(precision + 2 - P) / (f ln 2) bits for a symbol of frequency f: 3.4e-10 bits at P = 48 (1 bit after 3e9
symbols); at P = 32 it would be 2.2e-5 / f bits, enough to break the 2-bit bound over 10^5 rare symbols.

**Message and its exact length.** A message is a bit string of exact length (`BitString`, packed MSB-first,
zero padding bits). It names the number whose binary expansion is the message followed by zeros, and that
number lies inside the final interval: the decoder reads zeros past the end, so appending zero bits (padding
to a token or window size) never changes what decodes. `Encoder.finish()` returns the *shortest* such
message, which is the bits emitted so far plus one 1 bit (the pending bits vanish: the point 1/2 of the
straddling window needs none), or the emitted bits without their trailing zeros when the interval starts
exactly there. Its length is at most ⌈-log2 W⌉ + 1 for the final interval width W, so at most
⌈Σ -log2 q(x_t)⌉ + 2 whenever the cutting loss above stays under one bit. `finish()` does not end the
encoder: it reports the message as it would be if the input ended now, and `finished_bits()` its length
after any symbol, in O(1) (a scan for the last 1 bit in the rare case above), for EqualInfoAC's windows.
`copy()` lets a caller try a symbol and step back. This is the shortest message naming a point inside
the interval, about one bit shorter than naming a whole dyadic interval inside it (Lester et al.'s wording).

**One coder, and its speed.** Every kind uses this coder, static AC included. `constriction` (Rust, about
200 MB/s) was not used for static AC: its Python API (github.com/bamler-lab/constriction, the default preset of
`constriction.stream.queue.RangeEncoder`) fixes 24-bit probabilities (not β = 14) and only reports lengths
rounded up to 32-bit words (`num_bits()`), so neither the exact bit count nor the 2-bit bound is available
without reading its undocumented internal state (`pos()`). The bit loops are compiled with numba (a
wheel dependency); without it they run interpreted, bit-identical but about 0.2 MB/s. Measured
(`benchmarks/ac_codec.py`, 1 MiB of Python source, 4.54 bits/byte, a 2-core machine shared with other jobs):
about 25 MB/s encode and 18 MB/s decode per CPU-second, 8-12 and 6-10 MB/s by the wall clock under that load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np

DEFAULT_PRECISION = 14  # β of Lester et al. 2024 §2.4 (TensorFlow Compression's range coder)
DEFAULT_STATE_BITS = 48  # see the module docstring: cutting loss < 3.4e-10 bits per symbol at precision 14

# Taylor coefficients of 2^f = exp(f ln 2), f in [-1/2, 1/2]: (ln 2)^k / k!, error below 2^-52 at degree 13.
_LN2 = 0.6931471805599453
_EXP2_COEFFS = tuple(_LN2**k / math.factorial(k) for k in range(14))
_LOG2E = 1.4426950408889634


@cache
def _kernels() -> ModuleType:
    from isoflop.data.tokenizers import ac_kernels

    return ac_kernels


@dataclass(frozen=True)
class BitString:
    """A bit string of exact length: `data` holds the bits MSB-first, padded with zero bits to whole bytes."""

    data: bytes
    n_bits: int

    def __post_init__(self) -> None:
        if not 0 <= self.n_bits <= 8 * len(self.data) or len(self.data) != (self.n_bits + 7) // 8:
            raise ValueError(f"{len(self.data)} bytes cannot hold exactly {self.n_bits} bits")

    def __len__(self) -> int:
        return self.n_bits

    def bits(self) -> np.ndarray:
        """uint8 (n_bits,) of 0/1."""
        return np.unpackbits(np.frombuffer(self.data, dtype=np.uint8))[: self.n_bits]

    @classmethod
    def from_bits(cls, bits: Sequence[int] | np.ndarray) -> BitString:
        arr = np.asarray(bits, dtype=np.uint8).reshape(-1)
        if arr.size and arr.max() > 1:
            raise ValueError("bits must be 0 or 1")
        return cls(np.packbits(arr).tobytes(), int(arr.size))


def quantize_cdf(probs: Sequence[float] | np.ndarray, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Integer CDFs (int64 (..., K+1)) of the distributions in the last axis of `probs` (any non-negative
    finite weights, unnormalised allowed): c[i] = i + floor(cumsum(p)[i-1] / sum(p) * (T - K)), so every
    symbol gets frequency >= 1, c strictly increases and c[K] = T = 2^precision exactly. Row-wise: a batch
    gives what each row gives alone, bit for bit (see the module docstring)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 0:
        raise ValueError("probs must have a symbol axis")
    k, total_freq = p.shape[-1], 1 << precision
    if not 1 <= precision <= 30:
        raise ValueError(f"precision must be 1..30, got {precision}")
    if not 1 <= k <= total_freq:
        raise ValueError(f"{k} symbols cannot each get frequency >= 1 out of 2^{precision}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    cum = np.cumsum(p, axis=-1)  # sequential left to right: the same additions in every row and batch
    total = cum[..., -1:]
    if not ((total > 0) & np.isfinite(total)).all():
        raise ValueError("each distribution needs a positive, finite total")
    cdf = np.zeros(p.shape[:-1] + (k + 1,), dtype=np.int64)
    cdf[..., 1:] = np.floor(cum / total * float(total_freq - k)).astype(np.int64) + np.arange(1, k + 1)
    cdf[..., -1] = total_freq  # already so (cum[-1] / total == 1.0 exactly); written for clarity
    return cdf


def portable_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for float64 x <= 0 from IEEE basic operations only (2^n * poly(f)), so bit-identical on every
    IEEE-754 machine, unlike libm's or numpy's SIMD exp; relative error about 1e-16 * (1 + |x|); exp(-inf) = 0."""
    y = np.maximum(x, -1e4) * _LOG2E
    n = np.floor(y + 0.5)
    f = y - n
    poly = np.full_like(f, _EXP2_COEFFS[-1])
    for c in _EXP2_COEFFS[-2::-1]:
        poly = poly * f + c
    return np.ldexp(poly, n.astype(np.int64))


def cdf_from_logits(logits: Sequence[float] | np.ndarray, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """`quantize_cdf(softmax(logits))` in float64 with `portable_exp`: deterministic across machines.
    Logits of any float dtype (bf16/fp16/fp32 values are cast exactly); -inf is allowed, NaN and +inf are not."""
    z = np.asarray(logits, dtype=np.float64)
    if np.isnan(z).any() or np.isposinf(z).any():
        raise ValueError("logits must not be NaN or +inf")
    m = np.max(z, axis=-1, keepdims=True)  # exact, order-free
    if np.isneginf(m).any():
        raise ValueError("a row of logits is all -inf")
    return quantize_cdf(portable_exp(z - m), precision)


def check_cdf(cdf: np.ndarray, precision: int) -> np.ndarray:
    """`cdf` as a C-contiguous int64 array (..., K+1) after checking c[0] = 0, strict increase, c[K] = 2^precision."""
    c = np.ascontiguousarray(cdf, dtype=np.int64)
    if c.ndim == 0 or c.shape[-1] < 2:
        raise ValueError("a CDF needs at least 2 entries (one symbol)")
    if (c[..., 0] != 0).any() or (c[..., -1] != (1 << precision)).any() or (np.diff(c, axis=-1) <= 0).any():
        raise ValueError(f"a CDF must start at 0, strictly increase and end at 2^{precision}")
    return c


def _state_bits(precision: int, state_bits: int | None) -> int:
    """`state_bits`, by default the largest allowed up to DEFAULT_STATE_BITS; checked with `precision`."""
    if state_bits is None:
        state_bits = min(DEFAULT_STATE_BITS, 62 - precision)
    if not 1 <= precision <= 30 or not precision + 2 <= state_bits <= 62 - precision:
        raise ValueError(f"need 1 <= precision <= 30 and precision + 2 <= state_bits <= 62 - precision, "
                         f"got precision={precision}, state_bits={state_bits}")
    return state_bits


def _rows(symbols: np.ndarray, cdfs: np.ndarray, precision: int) -> tuple[np.ndarray, int]:
    """The CDF rows as (m, K+1) and the row step (0: one static row, 1: a row per symbol)."""
    c = check_cdf(cdfs, precision)
    if c.ndim == 1:
        return c[None, :], 0
    if c.ndim != 2 or c.shape[0] != symbols.shape[0]:
        raise ValueError(f"per-step CDFs must have shape ({symbols.shape[0]}, K+1), got {c.shape}")
    return c, 1


class Encoder:
    """Arithmetic encoder: feed symbols with their CDFs, read the message at any point with `finish()`.

    >>> enc = Encoder(); enc.encode_many(symbols, cdf)   # cdf (K+1,) static, or (n, K+1) one row per symbol
    >>> enc.encode(s, cdf_row); enc.finished_bits() == len(enc.finish())
    """

    def __init__(self, *, precision: int = DEFAULT_PRECISION, state_bits: int | None = None):
        self.precision, self.state_bits = precision, _state_bits(precision, state_bits)
        self._st = np.array([0, (1 << self.state_bits) - 1, 0, 0], dtype=np.int64)  # low, high, pending, n_bits
        self._buf = np.zeros(64, dtype=np.uint8)
        self.n_symbols = 0

    def encode(self, symbol: int, cdf: np.ndarray) -> None:
        """Encode one symbol with its CDF row (K+1,)."""
        self.encode_many(np.array([symbol], dtype=np.int64), cdf)

    def encode_many(self, symbols: Sequence[int] | np.ndarray, cdfs: np.ndarray) -> None:
        """Encode `symbols` (n,) with one static CDF (K+1,) or one row per symbol (n, K+1)."""
        syms = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
        rows, step = _rows(syms, cdfs, self.precision)
        if syms.size == 0:
            return
        if syms.min() < 0 or syms.max() >= rows.shape[1] - 1:
            raise ValueError(f"symbols must be in 0..{rows.shape[1] - 2}")
        low, high, pending, n_bits = (int(v) for v in self._st)
        need = (n_bits + pending + syms.size * self.state_bits) // 8 + 2
        if need > self._buf.size:
            grown = np.zeros(max(need, 2 * self._buf.size), dtype=np.uint8)
            grown[: self._buf.size] = self._buf
            self._buf = grown
        _kernels().encode_kernel(self._st, self._buf, syms, rows, step, self.precision, self.state_bits)
        self.n_symbols += syms.size

    def finished_bits(self) -> int:
        """The exact length of `finish()` now: emitted bits + 1, or fewer if the interval starts at a
        point the emitted bits already name (then their trailing zeros are dropped)."""
        low, _, pending, n_bits = (int(v) for v in self._st)
        if low == 0 and pending == 0:
            return self._last_one(n_bits)
        return n_bits + 1

    def _last_one(self, n_bits: int) -> int:
        nz = np.flatnonzero(self._buf[: (n_bits + 7) // 8])
        if nz.size == 0:
            return 0
        last = int(self._buf[nz[-1]])
        return 8 * int(nz[-1]) + 8 - (last & -last).bit_length() + 1

    def finish(self) -> BitString:
        """The shortest message that decodes to every symbol encoded so far (see the module docstring);
        the encoder is left as it was and may go on."""
        n = self.finished_bits()
        data = bytearray(self._buf[: (n + 7) // 8].tobytes())
        if n == int(self._st[3]) + 1:
            data[(n - 1) >> 3] |= 128 >> ((n - 1) & 7)  # the closing 1 bit
        return BitString(bytes(data), n)

    def copy(self) -> Encoder:
        """An independent encoder in the same state (to try a symbol and step back)."""
        other = Encoder.__new__(Encoder)
        other.precision, other.state_bits, other.n_symbols = self.precision, self.state_bits, self.n_symbols
        other._st, other._buf = self._st.copy(), self._buf.copy()
        return other


class Decoder:
    """Arithmetic decoder of a `BitString` (bits past its end read as 0); the caller gives the same CDFs, in
    the same order, as the encoder got, and decides when to stop (a count or an end symbol)."""

    def __init__(self, message: BitString, *, precision: int = DEFAULT_PRECISION,
                 state_bits: int | None = None):
        self.precision, self.state_bits = precision, _state_bits(precision, state_bits)
        self._buf = np.frombuffer(message.data, dtype=np.uint8).copy()
        self._n_bits = message.n_bits
        self._st = np.zeros(4, dtype=np.int64)  # low, high, value, next bit position
        _kernels().decoder_start(self._st, self._buf, self._n_bits, self.state_bits)
        self._empty_table = np.zeros(0, dtype=np.int64)

    def decode(self, cdf: np.ndarray) -> int:
        """The next symbol under CDF row `cdf` (K+1,)."""
        return int(self.decode_many(cdf, 1)[0])

    def decode_many(self, cdfs: np.ndarray, n: int | None = None) -> np.ndarray:
        """The next n symbols (int64 (n,)): one static CDF (K+1,) with `n`, or one row per symbol (n, K+1)."""
        c = check_cdf(cdfs, self.precision)
        if c.ndim == 1:
            if n is None:
                raise ValueError("a static CDF needs the number of symbols n")
            rows, step, count = c[None, :], 0, n
        else:
            if c.ndim != 2 or (n is not None and n != c.shape[0]):
                raise ValueError(f"per-step CDFs must have shape (n, K+1), got {c.shape}")
            rows, step, count = c, 1, c.shape[0]
        out = np.empty(count, dtype=np.int64)
        if count:
            _kernels().decode_kernel(self._st, self._buf, self._n_bits, rows, step, self._empty_table, -1, out,
                                     self.precision, self.state_bits)
        return out

    def decode_until(self, cdf: np.ndarray, stop: int, max_symbols: int) -> np.ndarray:
        """Symbols under one static CDF up to and including the first `stop`; ValueError if none comes within
        `max_symbols` (input that no encoder wrote may never reach it)."""
        c = check_cdf(cdf, self.precision)
        if c.ndim != 1:
            raise ValueError("decode_until takes one static CDF (K+1,)")
        table = np.repeat(np.arange(c.size - 1, dtype=np.int64), np.diff(c))  # count -> symbol, (T,)
        chunks: list[np.ndarray] = []
        size, done = 1024, 0
        while done < max_symbols:
            out = np.empty(min(size, max_symbols - done), dtype=np.int64)
            k = _kernels().decode_kernel(self._st, self._buf, self._n_bits, c[None, :], 0, table, stop, out,
                                         self.precision, self.state_bits)
            chunks.append(out[:k])
            done += k
            if k and out[k - 1] == stop:
                return np.concatenate(chunks)
            size *= 2
        raise ValueError(f"no end symbol {stop} within {max_symbols} symbols: not a message of this model")


def encode_symbols(symbols: Sequence[int] | np.ndarray, cdfs: np.ndarray, *, precision: int = DEFAULT_PRECISION,
                   state_bits: int | None = None) -> BitString:
    """The message of `symbols` under a static CDF (K+1,) or per-step CDFs (n, K+1)."""
    enc = Encoder(precision=precision, state_bits=state_bits)
    enc.encode_many(symbols, cdfs)
    return enc.finish()


def decode_symbols(message: BitString, cdfs: np.ndarray, n: int | None = None, *,
                   precision: int = DEFAULT_PRECISION, state_bits: int | None = None) -> np.ndarray:
    """The n symbols of `message` (see `Decoder.decode_many`)."""
    return Decoder(message, precision=precision, state_bits=state_bits).decode_many(cdfs, n)


def information_bits(symbols: Sequence[int] | np.ndarray, cdfs: np.ndarray,
                     precision: int = DEFAULT_PRECISION) -> float:
    """Σ -log2 q(x_t) under the quantised model, in bits (float64)."""
    syms = np.asarray(symbols, dtype=np.int64).reshape(-1)
    c = check_cdf(cdfs, precision)
    freq = np.diff(c)[syms] if c.ndim == 1 else np.diff(c, axis=-1)[np.arange(syms.size), syms]
    return float(syms.size * precision - np.log2(freq.astype(np.float64)).sum())


__all__ = ["BitString", "Decoder", "Encoder", "cdf_from_logits", "check_cdf", "decode_symbols", "encode_symbols",
           "information_bits", "portable_exp", "quantize_cdf"]
