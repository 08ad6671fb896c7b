"""Approach-3 fitting: analytic derivatives, recovery of known laws, scale-free convergence, bootstrap.

Synthetic data are drawn from a known law; the checks against Epoch AI's transcription of Chinchilla's runs
(shipped as `isoflop.science.examples.CHINCHILLA`) compare with the published numbers that docs/science.md lists
under "Checks against published results", each with its source.
"""

from __future__ import annotations

import numpy as np
import pytest

from isoflop.science import optimize
from isoflop.science.bootstrap import Bootstrap
from isoflop.science.errors import ScienceError
from isoflop.science.examples import CHINCHILLA, chinchilla
from isoflop.science.fit import KEYS, Approach3, hoffmann_grid, validated_points
from isoflop.science.laws import PRESETS, ChinchillaLaw
from isoflop.science.objective import Objective

TRUE = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
HOFFMANN_TEX = PRESETS.get("hoffmann-tex")


def fit_chinchilla(N, D, L, **hyperparameters):
    """Approach 3 with these hyperparameters, fitted to (N, D, L)."""
    return Approach3(**hyperparameters).fit(N, D, L)


def synthetic(sigma: float = 0.0, seed: int = 0, law: ChinchillaLaw = TRUE):
    """12 model sizes × 10 tokens-per-parameter ratios (1 to 316), loss × exp(σ·noise)."""
    N = np.repeat(np.logspace(7.5, 10.5, 12), 10)
    D = N * np.tile(np.logspace(0, 2.5, 10), 12)
    L = law.loss(N, D) * np.exp(sigma * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L


# ----------------------------------------------------------------------------- derivatives

@pytest.mark.parametrize("loss", ["huber", "lad", "asymmetric"])
def test_analytic_gradient_and_hessian_match_finite_differences(loss):
    N, D, L = synthetic(sigma=0.02, seed=1)
    counts = np.random.default_rng(0).integers(0, 3, size=(3, N.size)).astype(float)
    obj = Objective(np.log(N), np.log(D), L, loss=loss, delta=1e-2, counts=counts)
    theta = np.array([[6.0, 7.5, 0.6, 0.35, 0.37], [5.0, 6.0, 0.5, 0.3, 0.3], [6.5, 7.9, 0.55, 0.36, 0.38]])
    rows = np.arange(3)
    f, g = obj.value_grad(theta, rows)
    H = obj.hessian(theta, rows)
    g_fd, H_fd = np.zeros_like(g), np.zeros_like(H)
    eps = 1e-6
    for j in range(5):
        step = np.zeros(5)
        step[j] = eps
        fp, gp = obj.value_grad(theta + step, rows)
        fm, gm = obj.value_grad(theta - step, rows)
        g_fd[:, j] = (fp - fm) / (2 * eps)
        H_fd[:, :, j] = (gp - gm) / (2 * eps)
    assert np.all(np.isfinite(f))
    np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-9 * np.abs(g).max())
    np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-7 * np.abs(H).max())
    # float32 evaluation (the multi-start stage) agrees to single precision
    f32, g32 = obj.astype(np.float32).value_grad(theta, rows)
    np.testing.assert_allclose(f32, f, rtol=1e-4)
    np.testing.assert_allclose(g32, g, rtol=1e-3, atol=1e-4 * np.abs(g).max())


def test_objective_is_hoffmanns_huber_of_log_residuals():
    N, D, L = synthetic(sigma=0.01, seed=2)
    theta = np.array(HOFFMANN_TEX.theta)
    r = np.log(HOFFMANN_TEX.loss(N, D)) - np.log(L)
    d = 1e-3
    expected = np.sum(np.where(np.abs(r) <= d, 0.5 * r**2, d * (np.abs(r) - 0.5 * d)))
    obj = Objective(np.log(N), np.log(D), L)
    assert obj.value_grad(theta[None])[0][0] == pytest.approx(expected, rel=1e-12)
    mean = Objective(np.log(N), np.log(D), L, reduction="mean", scale=1e3)
    assert mean.value_grad(theta[None])[0][0] == pytest.approx(expected / len(L) * 1e3, rel=1e-12)


def test_hoffmann_grid():
    grid = hoffmann_grid()
    assert grid.shape == (4500, 5)
    assert [sorted(set(grid[:, j])) for j in (0, 2, 3)] == [
        [0.0, 5.0, 10.0, 15.0, 20.0, 25.0], [-1.0, -0.5, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.5, 2.0]]
    assert len({tuple(row) for row in grid}) == 4500


def test_batched_lbfgs_is_scale_free_on_a_quadratic():
    # f = c·½(x−x*)ᵀQ(x−x*): the iterates must not depend on c (no absolute tolerance anywhere)
    Q = np.diag([1.0, 10.0, 100.0])
    target = np.array([1.0, -2.0, 3.0])

    def make(c):
        def fun(x, rows):
            d = x - target
            return c * 0.5 * np.einsum("ij,jk,ik->i", d, Q, d), c * d @ Q
        return fun

    x0 = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    results = [optimize.lbfgs(make(c), x0) for c in (1e-12, 1.0, 1e12)]
    for res in results:
        np.testing.assert_allclose(res.x, np.tile(target, (2, 1)), atol=1e-8)
        assert set(res.status) <= {optimize.STEP, optimize.DECREASE, optimize.GRADIENT, optimize.LINE_SEARCH}
    assert all(np.array_equal(r.iterations, results[0].iterations) for r in results)


# ----------------------------------------------------------------------------- recovery

@pytest.mark.parametrize("loss", ["huber", "lad"])
def test_noise_free_data_give_back_the_law_from_the_grid(loss):
    fit = fit_chinchilla(*synthetic(), loss=loss)
    assert fit.success and fit.detail.n_starts == 4500 and fit.detail.n_near_best > 0
    law = fit.law
    got = (law.E, law.A, law.B, law.alpha, law.beta)
    np.testing.assert_allclose(got, (TRUE.E, TRUE.A, TRUE.B, TRUE.alpha, TRUE.beta), rtol=1e-7)
    assert fit.law.a == pytest.approx(TRUE.a, abs=1e-9) and fit.law.G == pytest.approx(TRUE.G, rel=1e-6)
    assert fit.approach == 3 and fit.a == law.a and fit.b == law.b and fit.intervals is None
    # the common allocation form N_opt = k_N·C^a is the law's own optimum
    assert fit.k_N * 1e22**fit.a == pytest.approx(law.optimal(1e22)[0], rel=1e-12)
    assert fit.k_D * 1e22**fit.b == pytest.approx(law.optimal(1e22)[1], rel=1e-12)


def test_noisy_data_give_back_the_law_within_tolerance():
    # σ = 0.2 % log-normal noise on 120 runs. Tolerances are about 3.5 Monte-Carlo standard deviations of the
    # estimate (measured over 40 noise draws: E 0.0024, A 3.8 %, B 1.7 %, α 0.0022, β 0.0009, a 0.0019).
    fit = fit_chinchilla(*synthetic(sigma=0.002, seed=3))
    law = fit.law
    assert fit.success
    assert law.E == pytest.approx(TRUE.E, abs=0.008)
    assert law.A == pytest.approx(TRUE.A, rel=0.12)
    assert law.B == pytest.approx(TRUE.B, rel=0.06)
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.008)
    assert law.beta == pytest.approx(TRUE.beta, abs=0.0035)
    assert fit.a == pytest.approx(TRUE.a, abs=0.007)
    assert fit.n_points == 120 and np.isfinite(fit.detail.condition) and fit.detail.condition > 1


@pytest.mark.parametrize("change", [
    {"reduction": "mean"}, {"scale": 1e-3}, {"scale": 1e3}, {"reduction": "mean", "scale": 1e-6}])
def test_started_from_hoffmann_the_optimum_does_not_depend_on_the_loss_scale(change):
    # the failure Epoch found in Hoffmann's fit (docs/science.md, "Checks": a scale-free fit)
    data = synthetic(sigma=0.01, seed=4)
    ref = fit_chinchilla(*data, starts=HOFFMANN_TEX)
    fit = fit_chinchilla(*data, starts=HOFFMANN_TEX, **change)
    assert ref.success and fit.success
    np.testing.assert_allclose(fit.detail.theta, ref.detail.theta, rtol=1e-6, atol=1e-7)
    factor = change.get("scale", 1.0) / (len(data[2]) if change.get("reduction") == "mean" else 1.0)
    assert fit.detail.objective == pytest.approx(ref.detail.objective * factor, rel=1e-9)
    assert abs(fit.law.alpha - HOFFMANN_TEX.alpha) > 0.001  # it moved away from the start


def test_an_unfinished_fit_says_so():
    fit = fit_chinchilla(*synthetic(sigma=0.01, seed=4), starts=HOFFMANN_TEX, max_iter=1)
    assert not fit.success and fit.message.startswith("not converged")


def test_asymmetric_loss_fits_the_lower_envelope():
    # losses above the law by exponential noise (kyo-takano/chinchilla's simulator, chinchilla/simulator.py): the ×10
    # penalty on over-prediction recovers the law; sum-Huber in log space is pulled up and away
    N, D, _ = synthetic()
    L = TRUE.loss(N, D) + np.random.default_rng(1).exponential(0.02, N.size)
    fit = fit_chinchilla(N, D, L, loss="asymmetric")
    law = fit.law
    assert fit.success
    assert law.E == pytest.approx(TRUE.E, abs=0.01)
    assert (law.alpha, law.beta) == pytest.approx((TRUE.alpha, TRUE.beta), abs=0.005)
    assert (law.A, law.B) == pytest.approx((TRUE.A, TRUE.B), rel=0.05)
    assert np.mean(fit.law.loss(N, D) <= L) > 0.8
    assert fit.detail.objective == pytest.approx(np.mean(np.where(fit.law.loss(N, D) > L, 10, 1)
                                                  * np.abs(fit.law.loss(N, D) - L)), rel=1e-6)


def test_fit_result_and_input_checks():
    N, D, L = synthetic(sigma=0.01, seed=5)
    fit = fit_chinchilla(N, D, L, starts=[HOFFMANN_TEX, PRESETS.get("epoch")], drop_highest=3)
    assert fit.n_points == 117 and fit.detail.n_starts == 2
    out = fit.to_dict()
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G", "objective", "success", "n_points", "message",
                "iterations", "condition", "log_A", "log_B", "log_E", "approach", "law", "k_N", "k_D",
                "intervals", "tokens_per_param"):
        assert key in out
    assert set(KEYS) <= set(out)
    assert out["log_A"] == pytest.approx(np.log(fit.law.A)) and out["law"] == "chinchilla"
    assert fit.law == ChinchillaLaw.from_log(*fit.detail.theta)
    kept = validated_points(N, D, L, drop_highest=3)[2]
    assert np.all(kept < np.sort(L)[-3]) and len(kept) == 117
    for bad, word in [((N, D, -L), "L"), ((N[:-1], D, L), "D"), ((N * np.nan, D, L), "N"),
                      ((N[:4], D[:4], L[:4]), "at least 5")]:
        with pytest.raises(ScienceError, match=word):
            fit_chinchilla(*bad)
    with pytest.raises(ScienceError, match="loss"):
        Approach3(loss="mse")  # a bad hyperparameter fails when the estimator is made, before any data
    with pytest.raises(ScienceError, match="drop_highest"):
        fit_chinchilla(N, D, L, drop_highest=-1)


# ----------------------------------------------------------------------------- bootstrap

def test_bootstrap_matches_the_spread_over_fresh_noise():
    sigma = 0.005
    data = synthetic(sigma=sigma, seed=6)
    boot = Bootstrap(n=300, seed=0, level=0.95)
    fit = fit_chinchilla(*data, starts=HOFFMANN_TEX, bootstrap=boot)
    iv = fit.intervals
    assert iv.n_failed == 0 and iv.level == 0.95 and set(iv.samples) == set(KEYS)
    assert all(len(v) == 300 for v in iv.samples.values()) and iv.theta.shape == (300, 5)
    # Monte-Carlo truth: refit 30 fresh noise draws of the same design
    refits = [fit_chinchilla(*synthetic(sigma=sigma, seed=100 + s), starts=HOFFMANN_TEX) for s in range(30)]
    for key in ("E", "A", "B", "alpha", "beta", "a"):
        spread = np.std([getattr(f.law, key) for f in refits], ddof=1)
        assert 0.5 < iv.se[key] / spread < 2.0, key
        lo, hi = iv.ci[key]
        assert lo < getattr(fit.law, key) < hi
    assert set(iv.se) == set(iv.ci) == set(KEYS)
    entry = fit.tokens_per_param_bands((1e21, 1e23))["1e+21"]
    assert entry["estimate"] == pytest.approx(fit.law.tokens_per_param(1e21))
    assert entry["ci"][0] < entry["median"] < entry["ci"][1] and entry["se"] > 0
    out = fit.to_dict(samples=True)
    assert set(out["se"]) == set(KEYS) and len(out["bootstrap"]["samples"]["E"]) == 300
    assert out["intervals"]["level"] == 0.95 and out["intervals"]["ci"] == out["ci"]
    again = fit_chinchilla(*data, starts=HOFFMANN_TEX, bootstrap=boot)
    assert again.intervals.se == iv.se


def test_bootstrap_settings_are_checked():
    for bad, key in (({"n": 1}, "n"), ({"level": 1.0}, "level"), ({"level": 0}, "level"),
                     ({"subsample": 1.2}, "subsample"), ({"subsample": 0.8, "legacy_rng": True}, "subsample")):
        with pytest.raises(ScienceError) as info:
            Bootstrap(**bad)
        assert info.value.key == key
    assert Bootstrap().level == 0.8 and Bootstrap().percentiles == (10.0, 90.0)


# ----------------------------------------------------------------------------- Epoch AI's data (shipped)

# Besiroglu et al. 2024's published point estimate and bootstrap standard errors (docs/science.md, "Checks")
EPOCH_PUBLISHED = {"A": 482.01, "B": 2085.43, "E": 1.8172, "alpha": 0.3478, "beta": 0.3658}
EPOCH_SE = {"A": 124.5, "B": 1293.0, "E": 0.0257, "alpha": 0.0154, "beta": 0.0206}


@pytest.fixture(scope="module")
def epoch_data():
    records = chinchilla()  # D = C / (6N)
    assert len(records) == 245
    return records.N, records.D, records.L


@pytest.fixture(scope="module")
def epoch_fit(epoch_data):
    return fit_chinchilla(*epoch_data, drop_highest=CHINCHILLA.drop_highest)


def test_epoch_refit_point_estimate(epoch_fit):
    # Epoch's grid fit, and their published point within 0.1 standard error
    fit, law = epoch_fit, epoch_fit.law
    assert fit.success and fit.n_points == 240 and fit.detail.objective <= 0.00101828
    assert law.E == pytest.approx(1.8172, abs=0.001)
    assert law.alpha == pytest.approx(0.3473, abs=0.002) and law.beta == pytest.approx(0.3672, abs=0.002)
    assert law.A == pytest.approx(477.8, rel=0.01) and law.B == pytest.approx(2143, rel=0.01)
    assert fit.a == pytest.approx(0.514, abs=0.002)
    for key, value in EPOCH_PUBLISHED.items():
        assert abs(getattr(law, key) - value) < 0.1 * EPOCH_SE[key], key


def test_epoch_refit_from_hoffmann_at_any_scale(epoch_data, epoch_fit):
    # a naive mean-Huber L-BFGS-B stops after 2 iterations at Hoffmann's point; ours must not
    for change in ({"reduction": "mean"}, {"scale": 1e-3}, {"scale": 1e3}):
        fit = fit_chinchilla(*epoch_data, drop_highest=5, starts=HOFFMANN_TEX, **change)
        assert fit.success, change
        np.testing.assert_allclose(fit.detail.theta, epoch_fit.detail.theta, rtol=1e-6, atol=1e-7)


def test_epoch_filter_matters_and_lad_gives_epochs_published_point(epoch_data, epoch_fit):
    # without Epoch's filter β moves by more than 3 SE; LAD ≈ Epoch's Huber-likelihood fit lands on their point
    unfiltered = fit_chinchilla(*epoch_data)
    assert abs(unfiltered.law.beta - epoch_fit.law.beta) > 3 * EPOCH_SE["beta"]
    lad = fit_chinchilla(*epoch_data, drop_highest=5, loss="lad")
    assert lad.success and lad.detail.objective == pytest.approx(1.129495, abs=2e-6)
    published = {"A": 482.006, "B": 2085.434, "E": 1.81686, "alpha": 0.34781, "beta": 0.36585}  # notebook
    for key, value in published.items():
        assert abs(getattr(lad.law, key) - value) < 0.05 * EPOCH_SE[key], key


def test_epoch_lower_envelope_fit(epoch_data):
    # kyo-takano/chinchilla's example: C > 1e18 and N < D, mean asymmetric MAE, w = 10
    N, D, L = epoch_data
    keep = (6 * N * D > 1e18) & (N < D)
    fit = fit_chinchilla(N[keep], D[keep], L[keep], loss="asymmetric")
    assert keep.sum() == 234 and fit.success and fit.detail.objective <= 0.022783
    assert fit.law.E == pytest.approx(1.700, abs=0.002)
    assert fit.law.alpha == pytest.approx(0.289, abs=0.002) and fit.law.beta == pytest.approx(0.356, abs=0.002)
    assert fit.law.optimal(1e24)[0] == pytest.approx(1.60e11, rel=0.01)


def test_epoch_bootstrap_standard_errors(epoch_data):
    # Epoch's way: 4,000 resamples drawn with legacy RandomState(42), each refit started from Hoffmann's TeX
    # parameters; their 95 % intervals. Takes about 5 s.
    boot = Bootstrap(n=4000, seed=42, level=0.95, legacy_rng=True)
    fit = fit_chinchilla(*epoch_data, drop_highest=5, bootstrap=boot, bootstrap_start=HOFFMANN_TEX)
    iv = fit.intervals
    assert iv.n_failed == 0
    for key, se in EPOCH_SE.items():
        assert iv.se[key] == pytest.approx(se, rel=0.10), key
    published_ci = {"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}
    for key, (lo, hi) in published_ci.items():
        assert iv.ci[key] == pytest.approx((lo, hi), abs=0.005), key
    assert iv.se["a"] == pytest.approx(0.0200, abs=0.002)
    # Epoch's band: 10,000 multivariate-normal draws of log-space parameters around its published point, with
    # the bootstrap's covariance; median and 80 % interval of D/N at 5.88e23
    draws = np.random.default_rng(0).multivariate_normal(PRESETS.get("epoch").theta, iv.cov_log, size=10_000)
    ratios = ChinchillaLaw.from_log(*draws.T).tokens_per_param(5.88e23)
    assert np.median(ratios) == pytest.approx(18.3, abs=0.1)
    assert np.percentile(ratios, [10, 90]) == pytest.approx([10.9, 31.3], abs=1.0)
