"""EqualInfoAC tokens (Lester et al. 2024 §3.3, Fig. 2): windows of W bits, each coding as many bytes as fit,
with M1's context and the coder reset at every window, cut into N-bit tokens (W/N tokens a window).

    window:  bytes are coded one by one under M1 (m1.py, 257 symbols: bytes and END) into a fresh coder; the
             window is closed before the first byte whose shortest message (`Encoder.finish()`) would exceed
             W bits (or after END, or after `max_window_bytes` symbols), and its bits are the shortest message
             of the bytes it keeps, zero-padded to exactly W bits ("cell": a W-bit cell, below). Then M1
             restarts from BOS and the coder from [0, 1): a window decodes alone (Lester et al.'s App. A.2
             reset of M1 at every window).
    decode:  the rule must read only the window's W bits. Two lossless rules, both checked by the encoder,
             and the paper's. "first-match": decode symbols from
             the zero-padded window, re-encode them, and stop at the *first* k whose shortest message, padded,
             equals the window. The encoder keeps exactly that many bytes: it takes the greedy count k_g, reads
             k* = the first k <= k_g whose padded message equals that of k_g (the decoder decodes the same
             symbols up to k_g, since the window's point lies inside their interval, so it finds the same k*),
             and leaves the bytes after k* to the next window. So every window decodes to exactly its bytes:
             lossless by construction, checked again by the tests. The cost: bytes that leave the message
             unchanged move to the next window. On very predictable text that is most of them: when a run of
             likely bytes keeps the first byte's shortest point inside every later interval, all those prefixes
             share one message and the window keeps only the first byte ("a" * 5000 gives one byte a window).
             "cell" (equalinfo_cell.py, the default) is free of this: the window's W bits, as an integer m, name the cell
             [m 2^-W, (m + 1) 2^-W]; its two ends are decoded side by side, each symbol of the lower end joins
             the window, and the window ends with the first symbol on which the ends part (or after END, or
             at `max_window_bytes`). The encoder adds bytes while their interval still holds a W-bit point
             (the greedy test), then takes the longest k whose top cell (lower end the interval's highest
             W-bit point) keeps both ends together before step k, and decodes the window alone to check it
             before emitting it; one byte always works. A run of "a" fills the window up to the byte cap.
             Under a trained M1 (1.44 bits/byte on Python source) it holds 1.3x the bytes a window of
             "first-match" at W = 16 and 2.2x at W = 32 (LOG.md 2026-11-22). With the tiny test M1 it gives
             9% fewer on a repeated line at W = 16: on predictable text the W-bit point just above the
             interval often lies past the previous one too, so the window gives bytes back.
             "paper": the encoder keeps the greedy k_g and the decoder looks ahead as Lester et al. describe
             (§3.3, App. A.5): it keeps the longest decoded prefix whose re-encoding, padded, is the window,
             scanning while the re-encoding fits in W bits. It fails when the symbol decoded from the padding
             (not the real next byte, which did not fit) also re-encodes to the window. With our
             shortest-point messages that is nearly always so: the window's point p lies strictly inside that
             symbol's interval, whose shortest point is then p itself. So look-ahead decoding is not
             injective (the paper does not discuss this); a lossless rule must read the W bits alone and be
             checked by the encoder, as "cell" and "first-match" are. Kept only to measure the failure rate
             (`paper_rule_failures`), never to make training data.
    end:     the last window of a document holds END (M1's end-of-text logit), so where a document ends is
             unambiguous with no length header; END costs about -log2 p(END) bits once a document.

Token ids are 0..2^N - 1, end-of-text 2^N; N divides W. Windows of a batch of documents run side by side in
the `rows` rows of M1, all restarting together (a row that closed its window idles until all have), so the
batch shape never changes and tokens do not depend on the neighbours (m1.py).
Legend: R = rows, S = 257 symbols, C = S + 1 CDF entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.arithmetic import DEFAULT_PRECISION, BitString, Decoder, Encoder
from isoflop.data.tokenizers.equalinfo_cell import CellReader, close_window, top_cell
from isoflop.data.tokenizers.m1 import M1, M1Stepper, deterministic
from isoflop.data.tokenizers.neural_ac import DEFAULT_ROWS, END, NeuralCoderTokenizer, fill_rows

WINDOW_BITS = (16, 24, 32, 64, 128)  # Lester et al. §3.3 and App. A.1
DECODING = ("cell", "first-match", "paper")
# Symbols the encoder probes past the last change of the window's message before closing it: bounds the wasted
# M1 steps on predictable text, where a whole run shares one shortest message (see the module docstring).
PATIENCE = 4


class EqualInfoACTokenizer(NeuralCoderTokenizer):
    """W-bit windows of M1-driven arithmetic coding, each decodable alone, as N-bit tokens."""

    kind = "equalinfo-ac"

    def __init__(self, m1: M1, *, window_bits: int = 16, token_bits: int = 16, precision: int = DEFAULT_PRECISION,
                 rows: int = DEFAULT_ROWS, max_window_bytes: int | None = None, decoding: str = "cell"):
        super().__init__(m1, token_bits=token_bits, precision=precision, rows=rows)
        if window_bits not in WINDOW_BITS:
            raise ConfigError("window_bits", f"must be one of {WINDOW_BITS}, got {window_bits}")
        if window_bits % token_bits:
            raise ConfigError("token_bits", f"must divide window_bits={window_bits}, got {token_bits}")
        if precision + 2 > window_bits:
            raise ConfigError("precision", f"a window of {window_bits} bits must hold any one symbol "
                              f"(at most precision + 2 = {precision + 2} bits)")
        if decoding not in DECODING:
            raise ConfigError("decoding", f"must be one of {DECODING}, got {decoding!r}")
        self.window_bits, self.decoding = window_bits, decoding
        self.max_window_bytes = max_window_bytes if max_window_bytes is not None else 8 * window_bits
        if self.max_window_bytes < 1:
            raise ConfigError("max_window_bytes", f"must be positive, got {self.max_window_bytes}")
        self._window_bytes = window_bits // 8

    def _settled(self, padded: list[bytes]) -> bool:
        """Lossless rule only: the window's message has not changed for PATIENCE symbols, so the window will
        keep the first of them; stop probing (the rest go to the next window anyway)."""
        return (self.decoding == "first-match" and len(padded) > PATIENCE
                and padded[-1] == padded[-1 - PATIENCE])

    def _pad(self, message: BitString) -> bytes:
        return message.data + b"\0" * (self._window_bytes - len(message.data))

    # ------------------------------------------------------------------ encode
    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_batch([data])[0]

    def encode_batch(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                     ) -> list[np.ndarray]:
        return self.encode_with_stats(docs, progress)[0]

    def encode_with_stats(self, docs: Sequence[bytes], progress: Callable[[int], None] | None = None
                          ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The tokens of each document and counts over its windows: `windows`, `greedy_symbols` (Σ k_g),
        `kept_symbols` (Σ symbols the windows hold, END included) and `window_counts` (per document, the
        symbols of each window). `progress` gets the bytes coded so far after each round of windows."""
        symbols = [np.append(np.frombuffer(d, dtype=np.uint8).astype(np.int64), END) for d in docs]
        windows: list[list[bytes]] = [[] for _ in docs]
        stats: dict[str, Any] = {"windows": 0, "greedy_symbols": 0, "kept_symbols": 0,
                                 "window_counts": [[] for _ in docs]}
        pos = [0] * len(docs)
        row_doc: list[int | None] = [None] * self.rows
        queue = list(range(len(docs)))[::-1]
        stepper = M1Stepper(self.m1, rows=self.rows, capacity=self.max_window_bytes)
        with deterministic():
            while True:
                fill_rows(row_doc, queue)
                live = [r for r in range(self.rows) if row_doc[r] is not None]
                if not live:
                    break
                for r, (window, kept, greedy) in self._encode_windows(stepper, row_doc, symbols, pos).items():
                    d = row_doc[r]
                    assert d is not None
                    windows[d].append(window)
                    pos[d] += kept
                    stats["windows"] += 1
                    stats["greedy_symbols"] += greedy
                    stats["kept_symbols"] += kept
                    stats["window_counts"][d].append(kept)
                    if pos[d] == symbols[d].size:
                        row_doc[r] = None
                if progress is not None:  # bytes: the kept symbols less the END of each finished document
                    finished = len(docs) - len(queue) - sum(d is not None for d in row_doc)
                    progress(stats["kept_symbols"] - finished)
        return [self._to_ids(b"".join(w)) for w in windows], stats

    def _encode_windows(self, stepper: M1Stepper, row_doc: list[int | None], symbols: list[np.ndarray],
                        pos: list[int]) -> dict[int, tuple[bytes, int, int]]:
        """One round: a window for every live row -> (its W bits, symbols kept, greedy count)."""
        open_rows = {r for r, d in enumerate(row_doc) if d is not None}
        enc = {r: Encoder(precision=self.precision) for r in open_rows}
        padded: dict[int, list[bytes]] = {r: [] for r in open_rows}  # window bits after each accepted symbol
        encs: dict[int, list[Encoder]] = {r: [] for r in open_rows}  # cell rule: the coder after each symbol
        cdfs: dict[int, list[np.ndarray]] = {r: [] for r in open_rows}  # cell rule: each step's CDF row
        logits_RS = stepper.start()
        while True:
            cdfs_RC = self._cdfs(logits_RS)
            feed_R = np.zeros(self.rows, dtype=np.int64)
            for r in sorted(open_rows):
                d = row_doc[r]
                assert d is not None
                s = int(symbols[d][pos[d] + len(encs[r])])
                trial = enc[r].copy()
                trial.encode(s, cdfs_RC[r])
                if self.decoding == "cell":
                    cdfs[r].append(cdfs_RC[r].copy())
                    fits = top_cell(trial, self.window_bits) is not None
                else:
                    fits = trial.finished_bits() <= self.window_bits
                if not fits:
                    open_rows.discard(r)
                    continue
                enc[r] = trial
                encs[r].append(trial)
                if self.decoding != "cell":
                    padded[r].append(self._pad(trial.finish()))
                if s == END or len(encs[r]) == self.max_window_bytes or self._settled(padded[r]):
                    open_rows.discard(r)
                else:
                    feed_R[r] = s
            if not open_rows:
                break
            logits_RS = stepper.step(feed_R)
        out = {}
        for r, bits in padded.items():
            greedy = len(encs[r])
            assert greedy >= 1, "one symbol always fits: precision + 2 <= window_bits"
            if self.decoding == "cell":
                d = row_doc[r]
                assert d is not None
                run = symbols[d][pos[d]:pos[d] + greedy].tolist()
                window, kept = close_window(encs[r], cdfs[r], run, self.window_bits, precision=self.precision,
                                            max_symbols=self.max_window_bytes)
                out[r] = (window, kept, greedy)
            elif self.decoding == "paper":
                out[r] = (bits[-1], greedy, greedy)  # failures: see paper_rule_failures
            else:
                kept = bits.index(bits[-1]) + 1  # the first k whose padded message is the window's
                out[r] = (bits[-1], kept, greedy)
        return out

    # ------------------------------------------------------------------ decode
    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        per_window = self.window_bits // self.token_bits
        docs = []
        for d in self._documents(ids):
            if d.size % per_window:
                raise ValueError(f"a document's {d.size} tokens are not whole windows of {per_window} tokens")
            stream = self._to_bytes(d)
            docs.append([stream[i:i + self._window_bytes] for i in range(0, len(stream), self._window_bytes)])
        out: list[list[int]] = [[] for _ in docs]
        next_window = [0] * len(docs)
        ended = [False] * len(docs)
        row_doc: list[int | None] = [None] * self.rows
        queue = list(range(len(docs)))[::-1]
        stepper = M1Stepper(self.m1, rows=self.rows, capacity=self.max_window_bytes)
        with deterministic():
            while True:
                fill_rows(row_doc, queue)
                if all(d is None for d in row_doc):
                    break
                windows = {r: docs[d][next_window[d]] for r, d in enumerate(row_doc) if d is not None}
                for r, (syms, saw_end) in self._decode_windows(stepper, windows).items():
                    d = row_doc[r]
                    assert d is not None
                    out[d].extend(syms)
                    next_window[d] += 1
                    ended[d] = saw_end
                    if saw_end or next_window[d] == len(docs[d]):
                        row_doc[r] = None
        if not all(ended):
            raise ValueError("a document's last window holds no END: not a message of this tokenizer")
        return b"".join(bytes(np.asarray(o, dtype=np.uint8)) for o in out)

    def _decode_windows(self, stepper: M1Stepper, windows: dict[int, bytes]) -> dict[int, tuple[list[int], bool]]:
        """One round: the symbols of each row's window by the decoding rule (module docstring)."""
        dec = {r: Decoder(BitString(w, self.window_bits), precision=self.precision) for r, w in windows.items()}
        shadow = {r: Encoder(precision=self.precision) for r in windows}
        got: dict[int, list[int]] = {r: [] for r in windows}
        best = dict.fromkeys(windows, 0)  # paper rule: the longest prefix whose padded message is the window
        readers = {r: CellReader(w, self.window_bits, precision=self.precision, max_symbols=self.max_window_bytes)
                   for r, w in windows.items()} if self.decoding == "cell" else {}
        result: dict[int, tuple[list[int], bool]] = {}
        logits_RS = stepper.start()
        while True:
            cdfs_RC = self._cdfs(logits_RS)
            feed_R = np.zeros(self.rows, dtype=np.int64)
            for r in sorted(set(windows) - set(result)):
                if self.decoding == "cell":
                    readers[r].push(cdfs_RC[r])
                    syms = readers[r].symbols
                    if readers[r].done:
                        result[r] = ([s for s in syms if s != END], END in syms)
                    else:
                        feed_R[r] = syms[-1]
                    continue
                s = dec[r].decode(cdfs_RC[r])
                trial = shadow[r].copy()
                trial.encode(s, cdfs_RC[r])
                if self.decoding == "paper":  # look ahead while it fits; keep the longest matching prefix
                    if trial.finished_bits() > self.window_bits:
                        result[r] = self._paper_result(got[r], best[r])
                        continue
                    if self._pad(trial.finish()) == windows[r]:
                        best[r] = len(got[r]) + 1
                    shadow[r] = trial
                    got[r].append(s)
                    if s == END or len(got[r]) == self.max_window_bytes:
                        result[r] = self._paper_result(got[r], best[r])
                    else:
                        feed_R[r] = s
                    continue
                matched = self._pad(trial.finish()) == windows[r]
                shadow[r] = trial
                if s == END:
                    if not matched:
                        raise ValueError("END inside a window: not a message of this tokenizer")
                    result[r] = (got[r], True)
                    continue
                got[r].append(s)
                if matched:
                    result[r] = (got[r], False)
                elif len(got[r]) >= self.max_window_bytes:
                    raise ValueError(f"no window end within {self.max_window_bytes} symbols: not a message of "
                                     "this tokenizer")
                else:
                    feed_R[r] = s
            if len(result) == len(windows):
                return result
            logits_RS = stepper.step(feed_R)

    @staticmethod
    def _paper_result(got: list[int], best: int) -> tuple[list[int], bool]:
        kept = got[:best]
        return ([s for s in kept if s != END], END in kept)

    def paper_rule_failures(self, docs: Sequence[bytes]) -> dict[str, int]:
        """With decoding="paper": encode greedily, decode every window alone with the look-ahead rule, and
        count the windows that decode to other symbols than they hold (`failures` of `windows`)."""
        if self.decoding != "paper":
            raise ValueError('paper_rule_failures needs decoding="paper"')
        ids, stats = self.encode_with_stats(docs)
        cases = []  # (window bits, the symbols it holds)
        for doc, tokens, counts in zip(docs, ids, stats["window_counts"], strict=True):
            symbols = np.append(np.frombuffer(doc, dtype=np.uint8).astype(np.int64), END).tolist()
            stream, start = self._to_bytes(tokens), 0
            for i, count in enumerate(counts):
                cases.append((stream[i * self._window_bytes:(i + 1) * self._window_bytes],
                              symbols[start:start + count]))
                start += count
        failures = 0
        stepper = M1Stepper(self.m1, rows=self.rows, capacity=self.max_window_bytes)
        with deterministic():
            for b in range(0, len(cases), self.rows):
                batch = cases[b:b + self.rows]
                got = self._decode_windows(stepper, {r: w for r, (w, _) in enumerate(batch)})
                for r, (_, truth) in enumerate(batch):
                    syms, saw_end = got[r]
                    failures += int(syms + [END] * saw_end != truth)
        return {"windows": len(cases), "failures": failures}

    # ------------------------------------------------------------------ saving
    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "window_bits": self.window_bits, "max_window_bytes": self.max_window_bytes,
                "decoding": self.decoding}

    @classmethod
    def _knobs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return {**super()._knobs(meta), "window_bits": int(meta["window_bits"]),
                "max_window_bytes": int(meta["max_window_bytes"]), "decoding": str(meta["decoding"])}


__all__ = ["DECODING", "EqualInfoACTokenizer", "WINDOW_BITS"]
