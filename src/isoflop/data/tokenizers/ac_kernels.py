"""The bit loops of the exact arithmetic coder (`arithmetic.py` is the API; read its docstring first).

Written by hand because no library does this job exactly: `constriction` (the fast Rust coder,
github.com/bamler-lab/constriction) exposes to Python only its default preset, 24-bit probabilities and output
lengths rounded up to whole 32-bit words, and `torchac` (github.com/fab-jul/torchac) is GPL-licensed (its
setup.py), which a permissively licensed package cannot vendor. The loops are
plain Python over int64 numpy arrays, compiled with numba when it imports (`HAVE_NUMBA`) and run as they are
otherwise: the same code either way, so the compiled and interpreted coders give identical bits (a test holds
them equal through each kernel's `.py_func`). Importing this module imports numba; `arithmetic.py` imports it
only on first use, so `import isoflop` does no such work.

Scheme: Witten, Neal & Cleary (1987), "Arithmetic coding for data compression", CACM 30(6), with the
pending-bits ("E3") rule for an interval straddling 1/2. State `st` (int64):
encoder [low, high, pending, n_bits]; decoder [low, high, value, next input bit]. `low`/`high` are P-bit
integers (`high` inclusive), P = state_bits. Output bits are packed MSB-first into a zeroed uint8 buffer, so
a 0 bit is written by moving the cursor only. A CDF row is int64 (K+1,), 0 = c[0] < ... < c[K] = 2^precision.
Legend: R = interval width (high - low + 1), T = 2^precision, P = state_bits, K = alphabet size.
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    _jit = numba.njit(cache=True, nogil=True)
    HAVE_NUMBA = True
except ImportError:  # numba missing or built for another numpy: same code, interpreted (slow, still exact)
    HAVE_NUMBA = False

    def _jit(f):
        return f


ENC_LOW, ENC_HIGH, ENC_PENDING, ENC_NBITS = 0, 1, 2, 3
DEC_LOW, DEC_HIGH, DEC_VALUE, DEC_POS = 0, 1, 2, 3


@_jit
def _put_bits(buf: np.ndarray, n: int, bit: int, pending: int) -> int:
    """Write `bit` then `pending` copies of its complement at bit offset n; the new offset."""
    if bit:
        buf[n >> 3] |= np.uint8(128 >> (n & 7))
        return n + 1 + pending  # the pending zeros are already there
    n += 1
    for _ in range(pending):
        buf[n >> 3] |= np.uint8(128 >> (n & 7))
        n += 1
    return n


@_jit
def encode_kernel(st: np.ndarray, buf: np.ndarray, symbols: np.ndarray, cdfs: np.ndarray, step: int,
                  precision: int, state_bits: int) -> None:
    """Encode `symbols` (int64 (n,)) with CDF row `cdfs[i * step]` for symbol i (step 0: one static row).

    `buf` must have room for st[n_bits] + st[pending] + n * state_bits bits: each symbol leaves R >= 1 after
    the cut (state_bits >= precision + 2), so it is renormalised at most state_bits - 1 times."""
    half = np.int64(1) << (state_bits - 1)
    quarter = np.int64(1) << (state_bits - 2)
    low, high, pending, n = st[ENC_LOW], st[ENC_HIGH], st[ENC_PENDING], st[ENC_NBITS]
    for i in range(symbols.shape[0]):
        j = i * step
        s = symbols[i]
        r = high - low + 1
        high = low + ((r * cdfs[j, s + 1]) >> precision) - 1
        low = low + ((r * cdfs[j, s]) >> precision)
        while True:
            if high < half:
                n = _put_bits(buf, n, 0, pending)
                pending = 0
            elif low >= half:
                n = _put_bits(buf, n, 1, pending)
                pending = 0
                low -= half
                high -= half
            elif low >= quarter and high < half + quarter:
                pending += 1
                low -= quarter
                high -= quarter
            else:
                break
            low <<= 1
            high = (high << 1) | 1
    st[ENC_LOW], st[ENC_HIGH], st[ENC_PENDING], st[ENC_NBITS] = low, high, pending, n


@_jit
def _get_bit(buf: np.ndarray, n_bits: int, pos: int) -> int:
    """Bit `pos` of the message; 0 past its end (the coder's zero padding)."""
    if pos >= n_bits:
        return 0
    return (buf[pos >> 3] >> (7 - (pos & 7))) & 1


@_jit
def decoder_start(st: np.ndarray, buf: np.ndarray, n_bits: int, state_bits: int) -> None:
    """Fill the decoder state: the full interval and the first state_bits bits as `value`."""
    value = np.int64(0)
    for pos in range(state_bits):
        value = (value << 1) | _get_bit(buf, n_bits, pos)
    st[DEC_LOW], st[DEC_HIGH], st[DEC_VALUE], st[DEC_POS] = 0, (np.int64(1) << state_bits) - 1, value, state_bits


@_jit
def decode_kernel(st: np.ndarray, buf: np.ndarray, n_bits: int, cdfs: np.ndarray, step: int, table: np.ndarray,
                  stop: int, out: np.ndarray, precision: int, state_bits: int) -> int:
    """Decode into `out` (int64 (m,)) with row `cdfs[i * step]` for symbol i, until `out` is full or the symbol
    `stop` (>= 0) has been decoded (it is written too); returns how many were written. `table` (int64 (T,)):
    count -> symbol for a static row (an O(1) look-up); empty: binary search in the row."""
    half = np.int64(1) << (state_bits - 1)
    quarter = np.int64(1) << (state_bits - 2)
    low, high, value, pos = st[DEC_LOW], st[DEC_HIGH], st[DEC_VALUE], st[DEC_POS]
    written = 0
    for i in range(out.shape[0]):
        j = i * step
        r = high - low + 1
        # The encoder's cut is floor(R * c / T); this count picks the s with c[s] <= count < c[s + 1].
        count = (((value - low + 1) << precision) - 1) // r
        if table.shape[0] > 0:
            s = table[count]
        else:
            lo, hi = 0, cdfs.shape[1] - 1  # invariant: cdfs[j, lo] <= count < cdfs[j, hi]
            while hi - lo > 1:
                mid = (lo + hi) >> 1
                if cdfs[j, mid] <= count:
                    lo = mid
                else:
                    hi = mid
            s = lo
        high = low + ((r * cdfs[j, s + 1]) >> precision) - 1
        low = low + ((r * cdfs[j, s]) >> precision)
        while True:
            if high < half:
                pass
            elif low >= half:
                low -= half
                high -= half
                value -= half
            elif low >= quarter and high < half + quarter:
                low -= quarter
                high -= quarter
                value -= quarter
            else:
                break
            low <<= 1
            high = (high << 1) | 1
            value = (value << 1) | _get_bit(buf, n_bits, pos)
            pos += 1
        out[i] = s
        written += 1
        if s == stop:
            break
    st[DEC_LOW], st[DEC_HIGH], st[DEC_VALUE], st[DEC_POS] = low, high, value, pos
    return written
