"""The "cell" window rule of EqualInfoAC (equalinfo.py): a window's W bits, read as an integer m, name the cell
[m 2^-W, (m + 1) 2^-W] of the W-bit grid, and the window's end is where the cell's two ends part.

    decode:  two decoders read the cell's ends, the points m 2^-W and (m + 1) 2^-W (W-bit numbers, zero
             padded, so `arithmetic.Decoder` reads them exactly; (m + 1) 2^-W = 1 lies outside every
             interval). Each symbol the lower end decodes joins the window. The window ends with the first
             symbol on which the upper end decodes another symbol (the lower end's symbol is kept), after END,
             or after `max_symbols` symbols.
    encode:  greedy. Symbols are added while their interval still holds a point of the W-bit grid (the same
             test as "the shortest message fits in W bits"). For a count k the candidate is the top cell of
             the k symbols' interval I_k: its lower end is the highest grid point in I_k, so its upper end is
             at or past I_k's end and the ends part at step k at the latest; they must agree before, i.e. the
             upper end must lie in I_{k-1} (the next grid point above I_k falls before I_{k-1} ends). After
             END or at the symbol cap the lowest cell with both ends in I_k also serves (the ends never part).
             The longest k with a candidate wins; every candidate is decoded alone with the window's CDFs and
             must give exactly its symbols (`verify`) before it is emitted. k = 1 always has one: the first
             interval is [c[s], c[s + 1]) / 2^precision with W >= precision, so its top cell's upper end is
             c[s + 1] / 2^precision, the next symbol's start (or 1), and the ends part at once.

Why exact: the integer coder (ac_kernels.py) maps a symbol sequence to nested intervals with dyadic ends, and
its decoder, fed a point's bits, follows exactly the intervals that hold the point (its count test
c[s] <= count < c[s + 1] is the encoder's floor(R c / T) cut, and its renormalisation mirrors the encoder's,
pending bits included). `coding_interval` reads those ends off the encoder's state, so the cell tests are
integer comparisons; `verify` re-checks each window with the decoder itself. Legend: C = 258 CDF entries.
"""

from __future__ import annotations

import numpy as np

from isoflop.data.tokenizers.arithmetic import BitString, Decoder, Encoder
from isoflop.data.tokenizers.neural_ac import END


def coding_interval(enc: Encoder) -> tuple[int, int, int]:
    """The encoder's current interval as (A, R, D): [A, A + R) / 2^D, R the integer width of its state.

    The state is the emitted bits, `pending` straddle (E3) steps and the P-bit [low, high]; each E3 step maps
    x -> 2x - 1/2, so in the emitted prefix's frame low sits at (low + (2^pending - 1) 2^(P-1)) / 2^(P+pending).
    Reads the encoder's private state: arithmetic.py offers no public view of it, and this is its only user."""
    low, high, pending, n_bits = (int(v) for v in enc._st)
    p_bits = enc.state_bits
    n_bytes = (n_bits + 7) // 8
    prefix = int.from_bytes(enc._buf[:n_bytes].tobytes(), "big") >> (8 * n_bytes - n_bits)
    base = (prefix << (pending + p_bits)) + (((1 << pending) - 1) << (p_bits - 1))
    return base + low, high - low + 1, n_bits + pending + p_bits


def _grid(enc: Encoder, window_bits: int) -> tuple[int, int, int]:
    """The interval's ends (lo, hi) on the common grid 2^-E, E = max(D, W), and the cell width there."""
    a, r, d = coding_interval(enc)
    e = max(d, window_bits)
    return a << (e - d), (a + r) << (e - d), 1 << (e - window_bits)


def top_cell(enc: Encoder, window_bits: int) -> int | None:
    """The cell whose lower end is the highest W-bit grid point in the encoder's interval; None if none."""
    lo, hi, unit = _grid(enc, window_bits)
    m = (hi - 1) // unit
    return m if m * unit >= lo else None


def lowest_cell(enc: Encoder, window_bits: int) -> int | None:
    """The lowest cell with both ends inside the encoder's interval; None if none."""
    lo, hi, unit = _grid(enc, window_bits)
    m = -(-lo // unit)
    return m if (m + 1) * unit < hi else None


class CellReader:
    """Decodes one window by the cell rule, a step at a time (the caller supplies each step's CDF row)."""

    def __init__(self, window: bytes, window_bits: int, *, precision: int, max_symbols: int):
        upper = int.from_bytes(window, "big") + 1
        self._lower = Decoder(BitString(window, window_bits), precision=precision)
        self._upper = (Decoder(BitString(upper.to_bytes(len(window), "big"), window_bits), precision=precision)
                       if upper < 1 << window_bits else None)  # None: the point 1, in no symbol's interval
        self.max_symbols = max_symbols
        self.symbols: list[int] = []
        self.done = False

    def push(self, cdf: np.ndarray) -> None:
        """Decode the next step under CDF row `cdf` (C,); sets `done` once the window has ended."""
        s = self._lower.decode(cdf)
        self.symbols.append(s)
        parted = self._upper is None or self._upper.decode(cdf) != s
        self.done = parted or s == END or len(self.symbols) == self.max_symbols


def verify(window: bytes, window_bits: int, cdfs: list[np.ndarray], symbols: list[int], *, precision: int,
           max_symbols: int) -> bool:
    """Whether `window` decodes alone, under the CDF rows `cdfs` of steps 1, 2, ..., to exactly `symbols`."""
    reader = CellReader(window, window_bits, precision=precision, max_symbols=max_symbols)
    for cdf in cdfs:
        reader.push(cdf)
        if reader.done:
            break
    return reader.done and reader.symbols == symbols


def close_window(encs: list[Encoder], cdfs: list[np.ndarray], symbols: list[int], window_bits: int, *,
                 precision: int, max_symbols: int) -> tuple[bytes, int]:
    """(W bits, symbol count) of the window for the greedy run `symbols`: encs[i] is the encoder after
    symbols[:i + 1], cdfs[i] the CDF row of step i + 1. The longest verified count wins (module docstring)."""
    n_bytes = window_bits // 8
    for k in range(len(symbols), 0, -1):
        candidates = [top_cell(encs[k - 1], window_bits)]
        if symbols[k - 1] == END or k == max_symbols:
            candidates.append(lowest_cell(encs[k - 1], window_bits))
        for cell in candidates:
            if cell is None:
                continue
            window = cell.to_bytes(n_bytes, "big")
            if verify(window, window_bits, cdfs[:k], symbols[:k], precision=precision, max_symbols=max_symbols):
                return window, k
    raise AssertionError("no window for the first symbol: its top cell always decodes alone (a bug)")


__all__ = ["CellReader", "close_window", "coding_interval", "lowest_cell", "top_cell", "verify"]
