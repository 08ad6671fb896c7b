"""Approaches 1 and 2 recover the allocation exponent of a known Chinchilla law (Hoffmann et al. 2022)."""

from __future__ import annotations

import numpy as np
import pytest

from isoflop.science.bootstrap import Bootstrap
from isoflop.science.errors import ScienceError
from isoflop.science.isoflop import Approach1, Approach2, group_budgets, isoflop_profile
from isoflop.science.records import Curve

# Hoffmann et al. 2022's unrounded ("TeX") constants (docs/science.md, "Law presets"); written out here rather
# than imported so that these tests stand on their own.
E, A, B, ALPHA, BETA = 1.69337368, 406.401018, 410.722827, 0.33917084, 0.2849083
A_TRUE = BETA / (ALPHA + BETA)  # 0.4565
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))


def chinchilla(N, D):
    return E + A / np.asarray(N) ** ALPHA + B / np.asarray(D) ** BETA


def n_opt(C):
    return G * (np.asarray(C) / 6) ** A_TRUE


def isoflop_grid(budgets, sizes_per_budget=9, offset=0.8, width=0.6):
    """Runs of `sizes_per_budget` log-spaced sizes around offset·N_opt(C) at each budget."""
    N, C = [], []
    for c in budgets:
        ns = offset * n_opt(c) * np.logspace(-width, width, sizes_per_budget)
        N.extend(ns)
        C.extend([c] * sizes_per_budget)
    N, C = np.array(N), np.array(C)
    return N, C, chinchilla(N, C / (6 * N))


BUDGETS = np.logspace(18, 21, 7)


def approach2(N, C, L, *, rtol=0.1, bootstrap=0, subsample=None, seed=0):
    """Approach 2 with a bootstrap of `bootstrap` resamples (none when 0)."""
    boot = Bootstrap(n=bootstrap, subsample=subsample, seed=seed) if bootstrap else None
    return Approach2(rtol=rtol, bootstrap=boot).fit(N, C, L)


def approach1(curves, *, bracketed=True, bootstrap=0, seed=0):
    boot = Bootstrap(n=bootstrap, seed=seed) if bootstrap else None
    return Approach1(bracketed=bracketed, bootstrap=boot).fit(curves)


def test_parabola_minimum_is_exact():
    N = np.logspace(7, 9, 7)
    x = np.log(N)
    c2, c1, c0 = 0.05, -1.9, 21.0
    p = isoflop_profile(N, c2 * x**2 + c1 * x + c0, C=1e19)
    np.testing.assert_allclose(p.coef, (c2, c1, c0), rtol=1e-9)
    np.testing.assert_allclose(p.N_opt, np.exp(-c1 / (2 * c2)), rtol=1e-10)
    np.testing.assert_allclose(p.L_opt, c0 - c1**2 / (4 * c2), rtol=1e-12)
    assert p.D_opt == pytest.approx(1e19 / (6 * p.N_opt), rel=1e-12) and p.interior
    np.testing.assert_allclose(p.loss(N), c2 * x**2 + c1 * x + c0, rtol=1e-10)


def test_profile_needs_three_sizes_and_a_minimum():
    with pytest.raises(ScienceError, match="3"):
        isoflop_profile(np.array([1e7, 1e7, 2e7]), np.array([3.0, 3.1, 2.9]), C=1e19)
    with pytest.raises(ScienceError, match="not convex"):
        isoflop_profile(np.array([1e7, 2e7, 4e7]), np.array([3.0, 3.2, 3.0]), C=1e19)


def test_approach2_noise_free_is_exact_when_grids_track_the_optimum():
    # With each budget's sizes at a fixed ratio to N_opt(C), every isoFLOP profile of the Chinchilla law has
    # the same shape in log(N/N_opt), up to scale: the parabola's vertex misses N_opt by the same factor at
    # every budget, so the slope a is exact even though the profile is not a parabola.
    fit = approach2(*isoflop_grid(BUDGETS))
    assert fit.a == pytest.approx(A_TRUE, abs=1e-9)
    assert fit.a + fit.b == pytest.approx(1.0, abs=1e-12)
    assert len(fit.detail.profiles) == 7 and not fit.detail.skipped and fit.n_points == 63
    assert fit.approach == 2 and fit.law is None and fit.success and fit.message == "7 budgets fitted"
    for p in fit.detail.profiles:
        assert p.N_opt == pytest.approx(n_opt(p.C), rel=0.02)  # the vertex is near the true optimum
        assert 6 * p.N_opt * p.D_opt == pytest.approx(p.C, rel=1e-12)


def test_approach2_fixed_sizes_is_close():
    # The same sizes at every budget (a common sweep) put the optimum off-centre; the parabola's asymmetry bias
    # then varies with C, but stays small when the optimum is inside the sizes.
    sizes = np.logspace(7.5, 10.5, 13)
    N = np.tile(sizes, BUDGETS.size)
    C = np.repeat(BUDGETS, sizes.size)
    fit = approach2(N, C, chinchilla(N, C / (6 * N)))
    assert fit.a == pytest.approx(A_TRUE, abs=0.02)
    assert all(p.interior for p in fit.detail.profiles) and fit.success


def noisy_grid(seed):
    """Budgets hit only up to ±2 % (grouped by rtol), loss noise σ = 0.005 nats."""
    rng = np.random.default_rng(seed)
    N, C, _ = isoflop_grid(BUDGETS)
    C = C * np.exp(rng.uniform(-0.02, 0.02, C.size))
    return N, C, chinchilla(N, C / (6 * N)) + rng.normal(0, 0.005, N.size)


def test_approach2_noisy_recovers_a():
    N, C, L = noisy_grid(0)
    fit = approach2(N, C, L, bootstrap=400, seed=1)
    assert len(fit.detail.profiles) == 7
    # tolerance: over 30 noise seeds the largest error was 0.009
    assert fit.a == pytest.approx(A_TRUE, abs=0.02)
    lo, hi = fit.intervals.ci["a"]
    assert lo < fit.a < hi and hi - lo < 0.05 and fit.intervals.level == 0.8
    assert fit.intervals.ci["b"] == pytest.approx((1 - hi, 1 - lo))
    sub = approach2(N, C, L, bootstrap=100, subsample=0.8, seed=1)  # Hoffmann's Table 2 resampling
    assert sub.intervals.ci["a"][0] < sub.a < sub.intervals.ci["a"][1]
    again = approach2(N, C, L, bootstrap=400, seed=1)  # seeded: reproducible
    assert (again.a, again.intervals.ci, again.intervals.se) == (fit.a, fit.intervals.ci, fit.intervals.se)
    old = fit.to_dict()  # the keys older `isoflop fit --json` output had
    assert old["a_range"] == [lo, hi] and old["percentiles"] == [10.0, 90.0] and old["n_bootstrap"] == 400


def test_approach2_ranges_are_calibrated():
    # the 10-90 % range should hold the true a in about 80 % of noise draws (83 % over 30 seeds when written)
    covered = []
    for seed in range(20):
        lo, hi = approach2(*noisy_grid(seed), bootstrap=200, seed=seed).intervals.ci["a"]
        covered.append(lo < A_TRUE < hi)
    assert 0.6 <= np.mean(covered) <= 1.0


def test_approach2_skips_budgets_and_reports_them():
    N, C, L = isoflop_grid(BUDGETS[:3])
    N, C, L = np.append(N, [1e8, 2e8]), np.append(C, [1e22, 1e22]), np.append(L, [2.0, 1.9])
    fit = approach2(N, C, L)
    assert len(fit.detail.profiles) == 3 and fit.n_points == 27
    (skip,) = fit.detail.skipped
    assert skip.C == pytest.approx(1e22) and skip.n_points == 2 and "distinct sizes" in skip.reason
    assert "skipped C=1e+22 (2 distinct sizes" in fit.message
    d = fit.to_dict()
    assert d["a"] == fit.a and len(d["profiles"]) == 3 and d["skipped"][0]["n_points"] == 2
    with pytest.raises(ScienceError, match="at least 2 budgets"):
        approach2(N[:9], C[:9], L[:9])
    with pytest.raises(ScienceError, match="positive and finite"):
        approach2(N, C, -L)


def test_group_budgets():
    C = np.array([1e19, 1.04e19, 0.98e19, 3e19, 3.1e19, 1e20])
    assert group_budgets(C, rtol=0.1).tolist() == [0, 0, 0, 1, 1, 2]
    assert group_budgets(C, rtol=0.01).tolist() == [1, 2, 0, 3, 4, 5]


def synthetic_curves(sizes, tokens_axis=True):
    """Each size 'trained' from D = N/3 to D = 500 N; the loss at each D is the law's final loss."""
    curves = []
    for n in sizes:
        D = np.logspace(np.log10(n / 3), np.log10(500 * n), 300)
        cost = {"tokens": D} if tokens_axis else {"flops": 6 * n * D}
        curves.append(Curve(f"N={n:.2g}", float(n), chinchilla(n, D), cost))
    return curves


def test_approach1_recovers_a():
    curves = synthetic_curves(np.logspace(7, 10, 16))
    fit = approach1(curves, bootstrap=100, seed=0)
    assert fit.a == pytest.approx(A_TRUE, abs=0.01)
    assert fit.b == pytest.approx(1 - A_TRUE, abs=0.01)  # D from the curves' tokens; C = 6ND here
    lo, hi = fit.intervals.ci["a"]
    assert lo <= fit.a <= hi
    assert fit.to_dict()["envelope"]["curve"][0].startswith("N=") and fit.to_dict()["n_curves"] == 16
    assert fit.success and fit.approach == 1 and fit.law is None
    env = fit.detail
    assert fit.n_points == env.C.size and fit.message.startswith(f"{env.C.size} of 1000 FLOP levels used")
    assert np.all(np.diff(env.C) > 0) and set(env.N) <= {c.N for c in curves}
    # each level's winner really is the lowest of the law over the sizes trained
    for k in range(0, env.C.size, 97):
        losses = [chinchilla(c.N, env.C[k] / (6 * c.N)) for c in curves]
        assert env.N[k] == curves[int(np.argmin(losses))].N
    # flops given directly instead of tokens: the same answer
    assert approach1(synthetic_curves(np.logspace(7, 10, 16), tokens_axis=False)).a == pytest.approx(fit.a, abs=1e-6)


def test_approach1_unbracketed_levels_bias_the_slope():
    curves = synthetic_curves(np.logspace(7, 10, 16))
    biased = approach1(curves, bracketed=False)
    assert abs(biased.a - A_TRUE) > abs(approach1(curves).a - A_TRUE)
    # the fit says why it is not to be trusted
    assert not biased.success and "smallest or largest size" in biased.message


def test_approach1_errors():
    with pytest.raises(ScienceError, match="at least 2"):
        approach1(synthetic_curves([1e8]))
    with pytest.raises(ScienceError, match="distinct model sizes"):
        approach1(synthetic_curves([1e8, 1e8]))
    with pytest.raises(ScienceError, match="no parameter count"):
        approach1([Curve("x", None, np.ones(3), {"flops": np.arange(1.0, 4.0)})] + synthetic_curves([1e8]))
    with pytest.raises(ScienceError, match="subsample"):
        Approach1(bootstrap=Bootstrap(n=10, subsample=1.5))
    with pytest.raises(ScienceError, match="levels"):
        Approach1(levels=1)
