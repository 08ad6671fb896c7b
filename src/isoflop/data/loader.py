"""Deterministic, resumable, rank-aware batches of token windows.

Legend: B = rows of a batch on this rank, T = seq_len.

Samples are the non-overlapping windows of T + 1 tokens: window w covers tokens [w*T, w*T + T + 1), so
consecutive windows share one token (the last target of one is the first input of the next) and every token
is predicted once per epoch. Epoch e visits the windows in the order `default_rng([seed, e]).permutation`,
and the epochs are laid end to end as one infinite sequence of samples. Global batch i is samples
[i*G, (i+1)*G) of it (G = global batch; a batch may straddle two epochs), and rank r of W takes its rows
[r*G/W, (r+1)*G/W). So every batch is a pure function of (seed, i): resuming at batch i is bit-exact, and
the union of the ranks' rows is the same global batch whatever W is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def n_windows(n_tokens: int, seq_len: int) -> int:
    """Non-overlapping windows of seq_len + 1 tokens in a split of n_tokens."""
    return max(0, (n_tokens - 1) // seq_len)


def _window_rows(tokens: np.ndarray, windows: np.ndarray, seq_len: int) -> torch.Tensor:
    """The windows' tokens, shape (len(windows), T + 1), int64."""
    # One contiguous slice per row: far cheaper on a memmap than fancy indexing with an index matrix.
    rows = np.empty((len(windows), seq_len + 1), dtype=np.int64)
    for j, w in enumerate(windows.tolist()):
        rows[j] = tokens[w * seq_len: w * seq_len + seq_len + 1]
    return torch.from_numpy(rows)


class TrainLoader:
    """Training batches for one rank: `next()` -> (inputs_BT, targets_BT), int64 tensors."""

    def __init__(self, tokens: np.ndarray, *, seq_len: int, global_batch: int, seed: int, rank: int = 0,
                 world_size: int = 1, bos_id: int | None = None):
        if seq_len <= 0 or global_batch <= 0:
            raise ValueError(f"seq_len and global_batch must be positive, got {seq_len}, {global_batch}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.n_windows = n_windows(len(tokens), seq_len)
        if self.n_windows == 0:
            raise ValueError(f"{len(tokens)} tokens hold no window of seq_len + 1 = {seq_len + 1}")
        self.tokens = tokens
        self.seq_len, self.global_batch, self.seed = seq_len, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.bos_id = bos_id  # when set, every input row starts with it (DataConfig.bos_at_window_start)
        self.local_batch = global_batch // world_size
        self.next_batch = 0
        self._perms: dict[int, np.ndarray] = {}  # the one or two epochs in use

    def permutation(self, epoch: int) -> np.ndarray:
        """The order, shape (n_windows,), in which epoch `epoch` visits the windows."""
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            # Batches move forward, so only the current epoch and the next are worth keeping.
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = perm
        return perm

    def windows(self, first: int, count: int) -> np.ndarray:
        """Window ids of global samples [first, first + count), shape (count,)."""
        samples = np.arange(first, first + count, dtype=np.int64)
        epochs, positions = np.divmod(samples, self.n_windows)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            mask = epochs == epoch
            out[mask] = self.permutation(epoch)[positions[mask]]
        return out

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of global batch `index`: (inputs_BT, targets_BT)."""
        first = index * self.global_batch + self.rank * self.local_batch
        rows = _window_rows(self.tokens, self.windows(first, self.local_batch), self.seq_len)  # (B, T+1)
        inputs_BT = rows[:, :-1].contiguous()
        if self.bos_id is not None:
            inputs_BT[:, 0] = self.bos_id
        return inputs_BT, rows[:, 1:].contiguous()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: (inputs_BT, targets_BT), targets being inputs shifted left by one token."""
        out = self.batch(self.next_batch)
        self.next_batch += 1
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next()

    @property
    def epoch(self) -> float:
        """Epochs completed by the global batches served so far (fractional)."""
        return self.next_batch * self.global_batch / self.n_windows

    def state_dict(self) -> dict[str, Any]:
        # Rank and world size are left out on purpose: a run may resume on a different number of GPUs.
        return {"next_batch": self.next_batch, "seed": self.seed, "global_batch": self.global_batch,
                "seq_len": self.seq_len, "n_windows": self.n_windows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "global_batch", "seq_len", "n_windows"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: the saved loader has {key}={state[key]}, "
                                 f"this one {getattr(self, key)}")
        self.next_batch = int(state["next_batch"])


def val_batches(tokens: np.ndarray, seq_len: int, batch: int,
                n_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first n_batches * batch windows of the split in order, as (inputs_BT, targets_BT) batches; fewer
    (and a short last batch) when the split holds fewer windows. Deterministic, no shuffling."""
    if seq_len <= 0 or batch <= 0 or n_batches < 0:
        raise ValueError(f"bad val batch shape: seq_len={seq_len}, batch={batch}, n_batches={n_batches}")
    total = min(n_batches * batch, n_windows(len(tokens), seq_len))
    for first in range(0, total, batch):
        windows = np.arange(first, min(first + batch, total), dtype=np.int64)
        rows = _window_rows(tokens, windows, seq_len)  # (B, T+1)
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


__all__ = ["TrainLoader", "n_windows", "val_batches"]
