"""Batches: independent of world size, bit-exact on resume, every window once per epoch, shifted targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isoflop.data.loader import TrainLoader, n_windows, val_batches


def tokens(n: int) -> np.ndarray:
    # Distinct values (mod 2^16) so that a window is identified by its first token.
    return (np.arange(n) % 65000).astype(np.uint16)


def test_world_size_does_not_change_the_global_batch() -> None:
    toks = tokens(10_000)
    one = TrainLoader(toks, seq_len=16, global_batch=8, seed=3)
    ranks = [TrainLoader(toks, seq_len=16, global_batch=8, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(200):  # 200 * 8 samples > 624 windows: crosses epoch boundaries mid-batch
        x, y = one.next()
        parts = [r.next() for r in ranks]
        assert parts[0][0].shape == (4, 16)
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))


def test_targets_are_inputs_shifted() -> None:
    toks = tokens(1000)
    x, y = TrainLoader(toks, seq_len=10, global_batch=5, seed=0).next()
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (5, 10)
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):
        start = int(row_x[0])
        assert start % 10 == 0  # windows start at multiples of seq_len
        assert torch.equal(row_x, torch.from_numpy(toks[start:start + 10].astype(np.int64)))
        assert int(row_y[-1]) == toks[start + 10]


def test_bos_at_window_start_replaces_only_the_first_input() -> None:
    plain = TrainLoader(tokens(1000), seq_len=16, global_batch=4, seed=3)
    bos = TrainLoader(tokens(1000), seq_len=16, global_batch=4, seed=3, bos_id=999)
    for _ in range(3):
        (x, y), (xb, yb) = plain.next(), bos.next()
        assert (xb[:, 0] == 999).all() and torch.equal(xb[:, 1:], x[:, 1:]) and torch.equal(yb, y)


def test_resume_is_bit_exact() -> None:
    toks = tokens(5000)
    a = TrainLoader(toks, seq_len=12, global_batch=6, seed=7)
    for _ in range(37):
        a.next()
    state = a.state_dict()
    assert state["next_batch"] == 37
    # resume on a different number of ranks: rank 1 of 3 continues with its rows of the same batches
    b = TrainLoader(toks, seq_len=12, global_batch=6, seed=7, rank=1, world_size=3)
    b.load_state_dict(state)
    for _ in range(100):
        x, _ = a.next()
        xb, _ = b.next()
        assert torch.equal(x[2:4], xb)


@given(n_tok=st.integers(2, 400), seq_len=st.integers(1, 20), batch=st.integers(1, 7), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_every_window_once_per_epoch(n_tok: int, seq_len: int, batch: int, seed: int) -> None:
    toks = tokens(n_tok)
    n = n_windows(n_tok, seq_len)
    if n == 0:
        with pytest.raises(ValueError):
            TrainLoader(toks, seq_len=seq_len, global_batch=batch, seed=seed)
        return
    loader = TrainLoader(toks, seq_len=seq_len, global_batch=batch, seed=seed)
    epochs = 3
    starts = []
    while len(starts) < epochs * n:
        x, _ = loader.next()
        starts += (x[:, 0] // seq_len).tolist()
    for e in range(epochs):
        assert sorted(starts[e * n:(e + 1) * n]) == list(range(n))
    assert loader.permutation(0).tolist() == np.random.default_rng([seed, 0]).permutation(n).tolist()


def reference_batch(toks: np.ndarray, *, seq_len: int, global_batch: int, seed: int, index: int,
                    rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Global batch `index` by the rule of loader.py's docstring, written plainly: the epochs' permutations
    laid end to end, samples [i*G, (i+1)*G), rank r's rows [r*G/W, (r+1)*G/W), window w = tokens
    [w*T, w*T + T + 1), inputs its first T tokens and targets its last T."""
    n = (len(toks) - 1) // seq_len
    order: list[int] = []
    epoch = 0
    while len(order) < (index + 1) * global_batch:
        order += np.random.default_rng([seed, epoch]).permutation(n).tolist()
        epoch += 1
    local = global_batch // world_size
    first = index * global_batch + rank * local
    rows = np.stack([toks[w * seq_len: w * seq_len + seq_len + 1].astype(np.int64)
                     for w in order[first:first + local]])
    return rows[:, :-1], rows[:, 1:]


@pytest.mark.parametrize(("n_tok", "seq_len", "global_batch", "seed", "world_size"),
                         [(20_000, 8, 4, 0, 1), (20_000, 8, 4, 1, 2), (101, 7, 6, 5, 3), (57, 4, 5, 2, 1)])
def test_batches_are_the_documented_windows(n_tok, seq_len, global_batch, seed, world_size) -> None:
    """Every batch (epoch boundaries mid-batch included: 57 tokens hold 14 windows, batches of 5) equals the
    one the documented permutation rule gives, on every rank; seeds and epochs change the order."""
    toks = tokens(n_tok)
    loaders = [TrainLoader(toks, seq_len=seq_len, global_batch=global_batch, seed=seed, rank=r,
                           world_size=world_size) for r in range(world_size)]
    for index in range(3 * ((n_tok - 1) // seq_len) // global_batch + 2):  # about three epochs
        for rank, loader in enumerate(loaders):
            x, y = loader.next()
            want_x, want_y = reference_batch(toks, seq_len=seq_len, global_batch=global_batch, seed=seed,
                                             index=index, rank=rank, world_size=world_size)
            np.testing.assert_array_equal(x.numpy(), want_x)
            np.testing.assert_array_equal(y.numpy(), want_y)
    loader = loaders[0]
    assert not np.array_equal(loader.permutation(0), loader.permutation(1))
    other = TrainLoader(toks, seq_len=seq_len, global_batch=global_batch, seed=seed + 1)
    assert not np.array_equal(loader.permutation(0), other.permutation(0))


def test_bad_arguments() -> None:
    toks = tokens(100)
    with pytest.raises(ValueError, match="divisible"):
        TrainLoader(toks, seq_len=4, global_batch=6, seed=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        TrainLoader(toks, seq_len=4, global_batch=4, seed=0, rank=2, world_size=2)
    loader = TrainLoader(toks, seq_len=4, global_batch=4, seed=0)
    with pytest.raises(ValueError, match="global_batch"):
        loader.load_state_dict({"next_batch": 3, "global_batch": 8})


def test_val_batches_are_the_first_windows_in_order() -> None:
    toks = tokens(1000)
    got = list(val_batches(toks, seq_len=10, batch=4, n_batches=3))
    assert [x.shape for x, _ in got] == [(4, 10)] * 3
    starts = torch.cat([x[:, 0] for x, _ in got]).tolist()
    assert starts == [10 * w for w in range(12)]
    assert all(torch.equal(x[:, 1:], y[:, :-1]) for x, y in got)
    assert [[t.tolist() for t in b] for b in got] == [[t.tolist() for t in b] for b in val_batches(toks, 10, 4, 3)]
    short = list(val_batches(tokens(56), seq_len=10, batch=4, n_batches=3))  # 5 windows only
    assert [x.shape[0] for x, _ in short] == [4, 1]
    assert list(val_batches(tokens(5), seq_len=10, batch=4, n_batches=3)) == []
