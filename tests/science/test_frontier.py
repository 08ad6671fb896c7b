"""frontier: the loss-vs-cost envelope and its crossovers at analytically known costs ("Chinchilla's death")."""

from __future__ import annotations

import numpy as np
import pytest

from isoflop.science.errors import ScienceError
from isoflop.science.frontier import crossings, monotone, pareto_frontier
from isoflop.science.records import Curve

X = np.linspace(0, 8, 9)  # log10 cost


def small_and_large():
    """Piecewise linear in log10 cost: small = 3 - 0.15x; large falls at 0.3/decade to x=4, then 0.05/decade.
    large overtakes small where 3.3 - 0.3x = 3 - 0.15x (x = 2, loss 2.7), and small overtakes it again where
    2.3 - 0.05x = 3 - 0.15x (x = 7, loss 1.95)."""
    small = Curve("small", 1e6, 3 - 0.15 * X, {"flops": 10**X})
    large = Curve("large", 1e7, np.interp(X, [0, 4, 8], [3.3, 2.1, 1.9]), {"flops": 10**X})
    return small, large


def test_overtaken_then_overtakes_again():
    f = pareto_frontier(small_and_large())
    assert [c.cost for c in f.crossovers] == pytest.approx([1e2, 1e7], rel=1e-12)
    assert [c.loss for c in f.crossovers] == pytest.approx([2.7, 1.95], abs=1e-12)
    first, second = f.crossovers
    assert (first.before, first.after, first.kind, first.larger_wins) == ("small", "large", "cross", True)
    assert (second.before, second.after, second.larger_wins) == ("large", "small", False)
    assert [s.leader for s in f.segments] == ["small", "large", "small"]
    assert f.segments[1].cost_lo == pytest.approx(1e2) and f.segments[1].cost_hi == pytest.approx(1e7)
    assert f.leader_at(10.0) == "small" and f.leader_at(1e5) == "large" and f.leader_at(1e9) is None
    assert f.pairwise == f.crossovers
    np.testing.assert_allclose(f.loss, np.minimum(3 - 0.15 * np.log10(f.cost),
                                                  np.interp(np.log10(f.cost), [0, 4, 8], [3.3, 2.1, 1.9])))
    assert f.to_dict()["crossovers"][0]["after"] == "large"


def test_power_law_crossing_matches_the_analytic_point():
    # L_i = 2 + a_i c^-k_i cross where a1 c^-k1 = a2 c^-k2: c* = (a2/a1)^(1/(k2-k1)) = 10^5 here
    cost = np.logspace(0, 10, 400)
    slow = Curve("slow", 1e6, 2 + 10 * cost**-0.1, {"gpu_hours": cost})
    fast = Curve("fast", 1e8, 2 + 10 * 10**2.5 * cost**-0.6, {"gpu_hours": cost})
    (c,) = crossings(slow, fast, axis="gpu_hours")
    assert np.log10(c.cost) == pytest.approx(5.0, abs=1e-3)  # linear in log cost between dense knots
    assert (c.before, c.after) == ("slow", "fast")


def test_noisy_unsorted_curves_give_the_same_crossovers():
    small, large = small_and_large()
    rng = np.random.default_rng(0)
    dense = np.linspace(0, 8, 801)
    order = rng.permutation(dense.size)  # digitised curves are not in x order
    noisy = []
    for c, f in ((small, lambda x: 3 - 0.15 * x), (large, lambda x: np.interp(x, [0, 4, 8], [3.3, 2.1, 1.9]))):
        loss = f(dense) + np.where(rng.random(dense.size) < 0.1, 0.3, 0.0)  # upward spikes: non-monotone
        noisy.append(Curve(c.name, c.N, loss[order], {"flops": 10 ** dense[order]}))
    f = pareto_frontier(noisy)
    # the running minimum removes upward spikes exactly; crossings then land within one knot spacing
    assert np.log10([c.cost for c in f.crossovers]) == pytest.approx([2.0, 7.0], abs=0.01)
    assert [c.after for c in f.crossovers] == ["large", "small"]


def test_smoothing_removes_downward_noise():
    x = np.linspace(0, 8, 801)
    rng = np.random.default_rng(1)
    base = 3 - 0.15 * x
    noisy = base + rng.normal(0, 0.02, x.size)
    _, raw = monotone(10**x, noisy)
    _, smooth = monotone(10**x, noisy, smooth=25)
    # a running minimum of raw noise drifts low; averaging first keeps it near the trend
    assert np.mean(base - raw) > 0.02 and abs(np.mean(base - smooth)) < 0.01


def test_entry_hold_and_exit():
    # a clipped curve that starts below the leader: an entry, not a crossing
    a = Curve("a", 1e6, np.array([3.0, 2.5, 2.4]), {"cost": np.array([1.0, 10.0, 100.0])})
    b = Curve("b", 1e7, np.array([2.45, 2.0]), {"cost": np.array([10.0, 1000.0])})
    (change,) = pareto_frontier([a, b], axis="cost").crossovers
    assert (change.kind, change.after, change.loss) == ("entry", "b", 2.45) and change.cost == pytest.approx(10.0)

    # a finished small run holds its best loss: the larger run overtakes it where it reaches that loss
    small = Curve("small", 1e6, np.array([3.0, 2.0]), {"cost": np.array([1.0, 100.0])})
    large = Curve("large", 1e7, np.array([3.5, 1.0]), {"cost": np.array([1.0, 1e4])})
    held = pareto_frontier([small, large], axis="cost")
    (c,) = held.crossovers
    # small ends at cost 100 (loss 2.0) above large (2.25 there); large = 3.5 - 0.625·log10(c) reaches 2.0 at 10^2.4
    assert c.kind == "cross" and c.cost == pytest.approx(10**2.4) and c.loss == pytest.approx(2.0)
    unheld = pareto_frontier([small, large], axis="cost", hold=False)
    (c,) = unheld.crossovers
    assert c.kind == "exit" and c.cost == pytest.approx(100.0) and c.before == "small"


def test_three_curves_leader_per_interval():
    x = np.linspace(0, 6, 7)
    curves = [Curve(f"m{i}", 10.0**i, 3 - s * x + i * 0.5, {"flops": 10**x}) for i, s in enumerate([0.1, 0.3, 0.5])]
    f = pareto_frontier(curves)
    # m0 vs m1: 3 - 0.1x = 3.5 - 0.3x at x = 2.5; m1 vs m2: 3.5 - 0.3x = 4 - 0.5x at x = 2.5 too; m0 vs m2 at 2.5
    assert [s.leader for s in f.segments] == ["m0", "m2"]
    assert np.log10(f.crossovers[0].cost) == pytest.approx(2.5)
    assert len(f.pairwise) == 3


def test_errors():
    good = Curve("a", 1.0, np.ones(2), {"flops": np.array([1.0, 2.0])})
    with pytest.raises(ScienceError, match="no curves"):
        pareto_frontier([])
    with pytest.raises(ScienceError, match="'a' is used twice"):
        pareto_frontier([good, good])
    with pytest.raises(ScienceError, match="b: costs must be positive"):
        pareto_frontier([good, Curve("b", 1.0, np.ones(2), {"flops": np.array([0.0, 2.0])})])
    with pytest.raises(ScienceError, match="b: a loss is not finite"):
        pareto_frontier([good, Curve("b", 1.0, np.array([1.0, np.nan]), {"flops": np.array([1.0, 2.0])})])
    with pytest.raises(ValueError, match="no cost axis 'elapsed_s'"):
        pareto_frontier([good], axis="elapsed_s")
