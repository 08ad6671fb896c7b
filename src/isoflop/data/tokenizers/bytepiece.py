"""BytePiece (Su Jianlin 2023: kexue.fm/archives/9752, github.com/bojone/bytepiece): a byte-level unigram
tokenizer whose vocabulary comes from a byte n-gram language model instead of BPE merges or EM.

Reimplemented here, in plain Python and numpy, because PyPI `bytepiece` 0.6.3 is a source package that needs
Cython and a *byte* build of pyahocorasick compiled from source: `pip download bytepiece` fails to build here.
The algorithm follows the upstream code, github.com/bojone/bytepiece, file bytepiece/bytepiece.py (`Trainer`,
`Tokenizer`), and Su's blog post above; "upstream" below means that code:

1. Chunks: the text cut by the regex `.*\\n+|.+` (lines with their newlines), on *bytes*. No NFC: upstream
   applies NFC first (`normalize`), which is lossy on bytes; skipping it keeps `decode(encode(x)) == x` for
   all bytes. Training chunks are capped at 10,000 bytes (`TRAIN_CHUNK_CAP`).
2. Byte n-gram counts, n = 1..order (6), within chunks; n-grams (n > 1) seen fewer than `min_count` times
   are dropped. log p(c_n | c_1..c_{n-1}) = log C(c_1..c_n) - log C(c_1..c_{n-1}), C(empty) = total bytes.
3. Pre-segmentation by Viterbi byte tagging: state j = position of the byte in its piece (the last state
   means "order-1 or later"); a piece scores the product of its bytes' probabilities with the n-gram
   context restarted at the piece's start (and cut to order-1 bytes). With `ensure_unicode` a UTF-8
   continuation byte (0x80..0xBF) does not start a piece (a large penalty, not a ban, so that invalid
   UTF-8 still segments).
4. Piece pruning: count the pieces; keep the 256 single bytes (count 1 if unseen) and pieces of length <=
   36 seen >= min_count times (with `ensure_unicode`, not starting with a continuation byte). Repeatedly
   drop "wasted" pieces, whose unigram Viterbi segmentation is not themselves, and give a dropped piece's
   count to the pieces it is segmented into; cut to vocab_size - 3 by (multi-byte, -count, -length) the
   same way, until stable. The vocabulary may come out smaller than asked.

Encoding: unigram Viterbi, log p(w) = log count(w) - log sum of counts, chunk by chunk (upstream
enumerates matches with Aho-Corasick; here a set of piece prefixes stops the scan at each start early).
Ties go to the earliest found (shortest first piece), so encoding is deterministic. `_Unigram.segment` is
that loop in plain Python (training and the tests use it); `encode` runs the same loop over a byte trie,
compiled with numba (`bytepiece_kernels.py`; ids equal to `segment`'s for every input), ~15x faster.
Ids: 0 <pad>, 1 <bos>, 2 <eos> (our end-of-text), pieces from 3 sorted by (length, bytes), as
upstream numbers them (`Trainer.dump`).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.tokenizers.base import BaseTokenizer, as_ids

MODEL_FILE = "bytepiece.json"
N_RESERVED = 3  # <pad>, <bos>, <eos> = end-of-text
EOT_ID = 2
# Training chunks are capped at this many bytes: upstream's `Trainer.norm` cuts training text with
# `normalize(text, 10000)`, whose regex caps a line chunk at 10,000 bytes (bojone/bytepiece, bytepiece.py).
TRAIN_CHUNK_CAP = 10_000
_CHUNK = re.compile(rb".*\n+|.+")  # `.` is any byte but \n: every byte lands in exactly one chunk
_NO_START_PENALTY = 1e6  # log-prob cost of starting a piece on a continuation byte (ensure_unicode)


def chunks(data: bytes) -> list[bytes]:
    """`data` as line chunks (each ends after its run of newlines); concatenated they are `data`."""
    return _CHUNK.findall(data)


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


# ----------------------------------------------------------------------------- the unigram model


class _Unigram:
    """Pieces with log probabilities and max-probability segmentation."""

    def __init__(self, counts: dict[bytes, int]):
        total = sum(counts.values())
        self.logp = {p: math.log(c) - math.log(total) for p, c in counts.items() if c > 0}
        self.prefixes = {p[:i] for p in self.logp for i in range(1, len(p) + 1)}

    def segment(self, chunk: bytes) -> list[bytes]:
        """The most probable split of `chunk` into pieces (every single byte must be a piece)."""
        n = len(chunk)
        best = [0.0] + [-math.inf] * n
        back = [0] * (n + 1)  # back[t]: length of the last piece of the best split of chunk[:t]
        logp, prefixes = self.logp, self.prefixes
        for s in range(n):
            base = best[s]
            for end in range(s + 1, n + 1):
                piece = chunk[s:end]
                if piece not in prefixes:
                    break
                lp = logp.get(piece)
                if lp is not None and base + lp > best[end]:
                    best[end], back[end] = base + lp, end - s
        out, t = [], n
        while t > 0:
            out.append(chunk[t - back[t]:t])
            t -= back[t]
        return out[::-1]


# ----------------------------------------------------------------------------- training


def _ngram_counts(train_chunks: list[bytes], order: int, min_count: int) -> dict[bytes, int]:
    """Counts of the byte n-grams (1 <= n <= order) inside chunks; n > 1 kept if seen >= min_count times."""
    buf = np.frombuffer(b"".join(train_chunks), dtype=np.uint8)
    lengths = np.array([len(c) for c in train_chunks], dtype=np.int64)
    chunk_end = np.repeat(np.cumsum(lengths), lengths)  # (N,) end offset of each byte's chunk
    start = np.arange(len(buf))
    counts: dict[bytes, int] = {b"": len(buf)}
    key = np.zeros(len(buf), dtype=np.int64)  # big-endian integer of buf[s:s+n]: exact for n <= 7 bytes
    for n in range(1, order + 1):
        valid = start + n <= chunk_end
        shifted = np.zeros(len(buf), dtype=np.int64)
        shifted[: len(buf) - n + 1] = buf[n - 1:]
        key = key * 256 + shifted
        grams, freq = np.unique(key[valid], return_counts=True)
        if n > 1:
            grams, freq = grams[freq >= min_count], freq[freq >= min_count]
        counts.update((int(g).to_bytes(n, "big"), int(f)) for g, f in zip(grams, freq, strict=True))
    return counts


def _bnlm_segment(chunk: bytes, log_counts: dict[bytes, float], order: int, ensure_unicode: bool) -> list[bytes]:
    """Viterbi byte tagging under the byte n-gram model (step 3): state j = the byte's position in its piece
    (order-1: that or later), each byte scored given the bytes of its piece before it (at most order-1):
    log p(g[-1] | g[:-1]) = log C(g) - log C(g[:-1]), with C(b"") the total."""
    n, top = len(chunk), order - 1
    lc = log_counts
    neg = -math.inf
    score = [neg] * order  # score[j]: best log-prob of chunk[:t+1] with byte t in state j
    back: list[list[int]] = []  # back[t][j]: the state of byte t-1 on that best path
    for t in range(n):
        start_lp = lc[chunk[t:t + 1]] - lc[b""]
        if t and ensure_unicode and _is_continuation(chunk[t]):
            start_lp -= _NO_START_PENALTY
        new, ptr = [neg] * order, [0] * order
        if t == 0:
            new[0] = start_lp
        else:
            j_best = max(range(order), key=score.__getitem__)
            new[0], ptr[0] = score[j_best] + start_lp, j_best
            for j in range(1, order):
                prev = j - 1
                if j == top and score[top] > score[prev]:
                    prev = top
                if score[prev] == neg or t < j:
                    continue
                first = max(t - top, t - j)  # the context: the piece's last min(j, order-1) bytes
                lp = lc.get(chunk[first:t + 1])
                if lp is not None:
                    new[j], ptr[j] = score[prev] + lp - lc[chunk[first:t]], prev
        score = new
        back.append(ptr)
    pieces, j, end = [], max(range(order), key=score.__getitem__), n
    for t in range(n - 1, -1, -1):
        if j == 0:
            pieces.append(chunk[t:end])
            end = t
        j = back[t][j]
    return pieces[::-1]


def _prune(counts: Counter[bytes], limit: int) -> dict[bytes, int]:
    """Step 4 after the first cut: drop wasted pieces and cut to `limit`, redistributing, until stable."""
    kept = dict(counts)
    while True:
        model = _Unigram(kept)
        wasted = [p for p in kept if len(p) > 1 and model.segment(p) != [p]]
        if not wasted and len(kept) <= limit:
            return kept
        if not wasted:  # too many: drop the least counted multi-byte pieces
            order = sorted(kept, key=lambda p: (len(p) > 1, -kept[p], -len(p), p))
            wasted = order[limit:]
        dropped = {p: kept.pop(p) for p in wasted}
        model = _Unigram(kept)
        for piece, count in dropped.items():
            for sub in model.segment(piece):
                kept[sub] += count


def train_pieces(docs: Iterable[bytes], *, vocab_size: int, train_bytes: int, order: int = 6,
                 min_count: int = 2, max_piece_length: int = 36, ensure_unicode: bool = True) -> dict[bytes, int]:
    """The vocabulary (piece -> count) learned from the first `train_bytes` bytes of `docs`."""
    train_chunks: list[bytes] = []
    budget = train_bytes
    for doc in docs:
        if budget <= 0:
            break
        doc = doc[:budget]
        budget -= len(doc)
        for c in chunks(doc):
            train_chunks.extend(c[i:i + TRAIN_CHUNK_CAP] for i in range(0, len(c), TRAIN_CHUNK_CAP))
    ngrams = _ngram_counts(train_chunks, order, min_count)
    for b in range(256):
        ngrams.setdefault(bytes([b]), 1)
    log_counts = {g: math.log(c) for g, c in ngrams.items()}  # g = b"" holds the total
    counts: Counter[bytes] = Counter()
    for c in train_chunks:
        counts.update(_bnlm_segment(c, log_counts, order, ensure_unicode))

    def keep(p: bytes) -> bool:
        return len(p) == 1 or (len(p) <= max_piece_length and counts[p] >= min_count
                               and not (ensure_unicode and _is_continuation(p[0])))

    kept = Counter({p: c for p, c in counts.items() if keep(p)})
    for b in range(256):
        kept.setdefault(bytes([b]), 1)
    model = _Unigram(kept)
    for piece, count in counts.items():
        if not keep(piece):
            for sub in model.segment(piece):
                kept[sub] += count
    return _prune(kept, vocab_size - N_RESERVED)


# ----------------------------------------------------------------------------- the tokenizer


class BytePieceTokenizer(BaseTokenizer):
    """Unigram segmentation over a BytePiece vocabulary (all 256 bytes plus learned pieces)."""

    kind = "bytepiece"
    eot_id = EOT_ID

    def __init__(self, counts: dict[bytes, int]):
        missing = [b for b in range(256) if bytes([b]) not in counts]
        if missing:
            raise ValueError(f"a BytePiece vocabulary holds all 256 bytes; byte {missing[0]} is missing")
        self.counts = dict(counts)
        self._model = _Unigram(self.counts)
        self._pieces = [b"", b"", b""] + sorted(counts, key=lambda p: (len(p), p))  # id -> bytes
        self._ids = {p: i for i, p in enumerate(self._pieces) if i >= N_RESERVED}
        self.vocab_size = len(self._pieces)
        self._trie: tuple[np.ndarray, ...] | None = None  # built on first encode (bytepiece_kernels)

    @classmethod
    def train(cls, docs: Iterable[bytes], **knobs: Any) -> BytePieceTokenizer:
        """Learn the vocabulary (see `train_pieces` for the knobs)."""
        return cls(train_pieces(docs, **knobs))

    def piece_list(self) -> list[bytes]:
        """The pieces in id order, from id 3."""
        return self._pieces[N_RESERVED:]

    def tokenize(self, data: bytes) -> list[bytes]:
        """`data` as pieces (segmented line chunk by line chunk)."""
        pieces = self._pieces
        return [pieces[i] for i in self.encode(data).tolist()]

    def encode(self, data: bytes) -> np.ndarray:
        from isoflop.data.tokenizers import bytepiece_kernels as kernels  # imports numba: first use only

        if not kernels.HAVE_NUMBA:  # interpreted, the kernel would be slower than the dict-based loop
            ids = self._ids
            return np.fromiter((ids[p] for c in chunks(data) for p in self._model.segment(c)), dtype=np.int64)
        if self._trie is None:
            self._trie = kernels.build_trie(self._model.logp, self._ids)
        out = np.empty(len(data), dtype=np.int64)
        n = kernels.encode_kernel(np.frombuffer(data, dtype=np.uint8), *self._trie, out)
        if n < 0:
            raise ValueError("a BytePiece vocabulary needs a positive count for every single byte")
        return out[:n].copy()

    def decode(self, ids: Sequence[int] | np.ndarray) -> bytes:
        arr = as_ids(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1}, got {int(arr.min())}..{int(arr.max())}")
        pieces = self._pieces
        return b"".join([pieces[i] for i in arr.tolist()])

    def pieces(self, data: bytes, size: int) -> Iterator[bytes]:
        # Chunks are segmented independently, so any cut between chunks (after a newline run) is exact.
        start = 0
        while len(data) - start > size:
            cut = re.compile(rb"\n[^\n]").search(data, start + max(size, 1) - 1)
            if cut is None:
                break
            yield data[start:cut.start() + 1]
            start = cut.start() + 1
        yield data[start:]

    def token_byte_lengths(self) -> np.ndarray:
        return np.array([len(p) for p in self._pieces], dtype=np.int64)

    def files(self) -> dict[str, bytes]:
        # Upstream's model format (`Trainer.dump`): base64(piece) -> [id, text, count].
        table = {base64.b64encode(p).decode(): [i, p.decode("utf-8", "replace"), self.counts[p]]
                 for i, p in enumerate(self._pieces) if i >= N_RESERVED}
        return {MODEL_FILE: (json.dumps(table, ensure_ascii=False, indent=0, sort_keys=True) + "\n").encode()}

    @classmethod
    def from_files(cls, directory: Path, meta: dict[str, Any]) -> BytePieceTokenizer:
        path = directory / MODEL_FILE
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
            out = cls({base64.b64decode(k): int(v[2]) for k, v in table.items()})
        except Exception as e:  # OSError, bad JSON, bad base64, a missing byte
            raise ConfigError(str(path), f"cannot load BytePiece model: {e}") from None
        if meta.get("vocab_size") != out.vocab_size or meta.get("eot_id") != out.eot_id:
            raise ConfigError(str(directory), f"{MODEL_FILE} does not match its meta {meta}")
        return out


__all__ = ["BytePieceTokenizer", "chunks", "train_pieces"]
