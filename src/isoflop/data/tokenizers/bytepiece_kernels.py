"""The compiled BytePiece encoder: a byte trie of the pieces and the unigram Viterbi over it, in one numba
kernel (`bytepiece.py` is the API; read its docstring first).

Written by hand because the library that does this, PyPI `bytepiece` (Cython + a byte build of
pyahocorasick), needs a compiler and does not build here (see `bytepiece.py`). The kernel is the pure-Python
`_Unigram.segment` of `bytepiece.py` moved onto arrays, step for step: the same float64 sums in the same
order, the same strict `>` (the earliest candidate wins a tie), each line chunk started from 0.0, so its ids
equal `segment`'s for every input (tests/data/test_bytepiece.py holds them equal). Importing this module
imports numba; `bytepiece.py` imports it only on first encode, so `import isoflop` does no such work.

Trie layout (`build_trie`): nodes are the piece prefixes sorted by (length, bytes), node 0 the empty prefix.
In that order the children of a node are contiguous and sorted by their last byte, so node v's children are
nodes child_lo[v] .. child_hi[v]-1, found in `node_byte` by a scan or a binary search; the root's, one per
byte value, by the table `root_child` (every position starts there). `node_id[v]` is the token id of prefix
v (-1: not a piece) and `node_logp[v]` its log probability (both arrays indexed by node).
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    _jit = numba.njit(cache=True, nogil=True)
    HAVE_NUMBA = True
except ImportError:  # numba missing or built for another numpy: bytepiece.py falls back to the Python loop
    HAVE_NUMBA = False

    def _jit(f):
        return f


_NEWLINE = 10


def build_trie(logp: dict[bytes, float], ids: dict[bytes, int]) -> tuple[np.ndarray, ...]:
    """(root_child, child_lo, child_hi, node_byte, node_logp, node_id) for the pieces of `logp` (their ids
    from `ids`): the arguments of `encode_kernel` after `data`."""
    prefixes = sorted({p[:i] for p in logp for i in range(len(p) + 1)}, key=lambda p: (len(p), p))
    index = {p: v for v, p in enumerate(prefixes)}
    n = len(prefixes)
    child_lo = np.zeros(n, dtype=np.int64)
    child_hi = np.zeros(n, dtype=np.int64)
    node_byte = np.zeros(n, dtype=np.uint8)
    node_logp = np.zeros(n, dtype=np.float64)
    node_id = np.full(n, -1, dtype=np.int64)
    root_child = np.full(256, -1, dtype=np.int64)
    for v, p in enumerate(prefixes):
        if p:
            parent = index[p[:-1]]
            node_byte[v] = p[-1]
            if parent == 0:
                root_child[p[-1]] = v
            if child_hi[parent] == 0:
                child_lo[parent] = v
            child_hi[parent] = v + 1
        if p in logp:
            node_logp[v] = logp[p]
            node_id[v] = ids[p]
    return root_child, child_lo, child_hi, node_byte, node_logp, node_id


@_jit
def _child(v: int, byte: int, child_lo: np.ndarray, child_hi: np.ndarray, node_byte: np.ndarray) -> int:
    """The child of node v along `byte`, or -1."""
    lo, hi = child_lo[v], child_hi[v]
    if hi - lo <= 8:  # most nodes have one child: a scan beats the search's unpredictable branches
        for c in range(lo, hi):
            if node_byte[c] == byte:
                return c
        return -1
    while lo < hi:
        mid = (lo + hi) >> 1
        b = node_byte[mid]
        if b == byte:
            return mid
        if b < byte:
            lo = mid + 1
        else:
            hi = mid
    return -1


@_jit
def encode_kernel(data: np.ndarray, root_child: np.ndarray, child_lo: np.ndarray, child_hi: np.ndarray,
                  node_byte: np.ndarray, node_logp: np.ndarray, node_id: np.ndarray, out: np.ndarray) -> int:
    """Write the ids of `data` (uint8 (n,)) into `out` (int64 (n,)); the number written, or -1 where some
    position has no split (a byte that is no piece)."""
    n = data.shape[0]
    best = np.empty(n + 1, dtype=np.float64)  # best[t]: log-prob of the best split of its chunk up to t
    back_len = np.zeros(n + 1, dtype=np.int32)  # length and id of the last piece of that split
    back_id = np.zeros(n + 1, dtype=np.int32)
    a = 0
    while a < n:  # chunk data[a:b]: a run of non-newlines then a run of newlines (the regex of `chunks`)
        b = a
        while b < n and data[b] != _NEWLINE:
            b += 1
        while b < n and data[b] == _NEWLINE:
            b += 1
        best[a] = 0.0
        for t in range(a + 1, b + 1):
            best[t] = -np.inf
        for s in range(a, b):
            base = best[s]
            v = root_child[data[s]]
            for end in range(s + 1, b + 1):
                if end > s + 1:
                    v = _child(v, data[end - 1], child_lo, child_hi, node_byte)
                if v < 0:
                    break
                piece_id = node_id[v]
                if piece_id >= 0:
                    score = base + node_logp[v]
                    if score > best[end]:  # strict: the earliest candidate keeps a tie, as `segment` does
                        best[end] = score
                        back_len[end] = end - s
                        back_id[end] = piece_id
        a = b
    k, t = 0, n  # pieces never cross a chunk boundary, so one walk back from n passes through them all
    while t > 0:
        if back_len[t] == 0:
            return -1
        out[k] = back_id[t]
        k += 1
        t -= back_len[t]
    out[:k] = out[:k][::-1].copy()
    return k
