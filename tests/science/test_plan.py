"""The budget planner against published worked examples (Sardana et al.'s and Muennighoff et al.'s READMEs, the
constants' implications; docs/science.md names each source) and its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import param_groups
from isoflop.science import compute_optimal as P
from isoflop.science import uncertainty as U
from isoflop.science.data_constrained import (
    MUENNIGHOFF_R_D_STAR,
    MUENNIGHOFF_R_N_STAR,
    data_constrained,
    muennighoff_law,
)
from isoflop.science.inference_plan import inference_aware
from isoflop.science.laws import PRESETS, ChinchillaLaw, MuennighoffLaw
from isoflop.science.overhead import overhead_table
from isoflop.science.shape import model_shape

CHINCHILLA_C = 5.88e23  # 6 * 70e9 * 1.4e12
# The constants of Sardana et al.'s README examples (nikhilsardana/beyond-chinchilla, README.md)
SARDANA = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.336, beta=0.283)
CHINCHILLA_FORM = ["hoffmann", "hoffmann-tex", "epoch", "muennighoff"]


@pytest.mark.parametrize("name", CHINCHILLA_FORM)
def test_allocation_closes_and_matches_the_law(name):
    law = PRESETS.get(name)
    base = law.base if isinstance(law, MuennighoffLaw) else law
    for C in np.logspace(15, 27, 25):
        plan = P.compute_optimal(law, C)
        assert abs(6 * plan.N_opt * plan.D_opt / C - 1) <= 1e-12
        assert plan.N_opt == pytest.approx(base.optimal(C)[0], rel=1e-12)
        assert plan.loss == pytest.approx(base.loss_at(C), rel=1e-12)
        assert plan.tokens_per_param == pytest.approx(plan.D_opt / plan.N_opt)
    assert base.a + base.b == pytest.approx(1.0, abs=1e-15)


def test_allocation_is_the_minimum_on_the_isoflop_line():
    law = PRESETS.get("epoch")
    plan = P.compute_optimal(law, 1e22)
    for k in (0.98, 1.02):
        N = k * plan.N_opt
        assert law.loss(N, 1e22 / (6 * N)) > plan.loss


@pytest.mark.parametrize("name,ratio", [("hoffmann-tex", 59.0), ("hoffmann", 92.8), ("epoch", 18.3)])
def test_tokens_per_param_at_chinchilla_budget(name, ratio):
    """TeX constants 59.0, rounded 92.8, Epoch's published point 18.3 (± 0.1) at Chinchilla's budget."""
    assert P.compute_optimal(PRESETS.get(name), CHINCHILLA_C).tokens_per_param == pytest.approx(ratio, abs=0.1)


def test_kaplan_numeric_optimum_matches_closed_form():
    law = PRESETS.get("kaplan")
    p = law.alpha_N / law.alpha_D
    for C in (1e20, 1e24):
        expected = (p * law.N_c**p * C / (6 * law.D_c)) ** (1 / (p + 1))
        plan = P.compute_optimal(law, C)
        assert plan.N_opt == pytest.approx(expected, rel=1e-6)
        assert abs(6 * plan.N_opt * plan.D_opt / C - 1) <= 1e-12
    with pytest.raises(ValueError, match="Chinchilla form"):
        overhead_table(law, 1e22)


def test_flops_from_gpu_hours():
    assert P.flops_from_gpu_hours(1000, 0.4, 989e12) == pytest.approx(1000 * 3600 * 989e12 * 0.4, rel=1e-15)
    for mfu in (0.0, 1.2, -0.1, math.nan):
        with pytest.raises(ValueError, match="mfu"):
            P.flops_from_gpu_hours(1000, mfu, 989e12)
    with pytest.raises(ValueError, match="gpu_hours"):
        P.flops_from_gpu_hours(-1, 0.4, 989e12)
    with pytest.raises(ValueError, match="flops"):
        P.compute_optimal(PRESETS.get("epoch"), -1e20)


# --- Sardana et al. 2024 ----------------------------------------------------------------------------------------


def test_inference_aware_worked_example():
    """Sardana et al.'s README: N* = 2.418e10, D* = 2.657e12 (± 0.1 %); 70.96 % / 146.77 % / 95.22 %."""
    assert SARDANA.loss(70e9, 1e12) == pytest.approx(1.947, abs=5e-4)
    out = inference_aware(SARDANA, 1.947, 2e12).to_dict()
    assert out["N"] == pytest.approx(2.418e10, rel=1e-3)
    assert out["D"] == pytest.approx(2.657e12, rel=1e-3)
    assert 100 * out["N_ratio"] == pytest.approx(70.96, abs=0.05)
    assert 100 * out["D_ratio"] == pytest.approx(146.77, abs=0.05)
    assert 100 * out["flops_ratio"] == pytest.approx(95.22, abs=0.05)
    assert out["chinchilla_N"] == pytest.approx(3.408e10, rel=1e-3)
    assert out["chinchilla_D"] == pytest.approx(1.81e12, rel=1e-3)
    assert SARDANA.loss(out["N"], out["D"]) == pytest.approx(1.947, abs=1e-12)


def test_inference_aware_minimises_lifetime_flops_on_the_iso_loss_curve():
    plan = inference_aware(SARDANA, 1.947, 2e12)
    E, A, B, alpha, beta = SARDANA.E, SARDANA.A, SARDANA.B, SARDANA.alpha, SARDANA.beta
    for k in (0.95, 1.05):  # move along L(N, D) = 1.947
        D = k * plan.D
        N = (A / (1.947 - E - B * D**-beta)) ** (1 / alpha)
        assert plan.lifetime_flops(N, D) > plan.lifetime_flops(plan.N, plan.D)


def test_inference_free_limit_is_chinchilla_inverse():
    out = inference_aware(SARDANA, 1.947, 0.0)
    assert out.N == pytest.approx(3.408e10, rel=1e-3) and out.D == pytest.approx(1.81e12, rel=1e-3)
    # the Chinchilla-optimal point at that loss is the compute-optimal plan of its own budget
    plan = P.compute_optimal(SARDANA, 6 * out.N * out.D)
    assert plan.N_opt == pytest.approx(out.N, rel=1e-9) and plan.loss == pytest.approx(1.947, abs=1e-9)
    with pytest.raises(ValueError, match="irreducible"):
        inference_aware(SARDANA, 1.6, 1e12)


def test_chinchilla_optimal_30b():
    """Sardana et al.'s README: D = 1.556e12, L = 1.958253, training FLOPs 2.801e23."""
    plan = P.optimal_tokens(SARDANA, 30e9)
    assert plan.D_opt == pytest.approx(1.556e12, rel=5e-4)
    assert plan.loss == pytest.approx(1.958253, abs=5e-7)
    assert plan.flops == pytest.approx(2.801e23, rel=5e-4)


# --- Muennighoff et al. 2023 ------------------------------------------------------------------------------------


def test_data_constrained_readme_losses_and_allocation():
    """The datablations README: losses to 1e-9; C = 1e22, U = 25e9 -> D = 2.373e11, N = 7.022e9 (± 0.5 %)."""
    law = PRESETS.get("muennighoff")
    assert law.loss(6.34e9, 25e9, D_total=242e9) == pytest.approx(2.2256440890, abs=1e-9)
    assert law.loss(8.67e9, 25e9, D_total=178e9) == pytest.approx(2.2269634075, abs=1e-9)
    out = data_constrained(law, 1e22, 25e9).to_dict()
    assert out["D"] == pytest.approx(2.373e11, rel=5e-3)
    assert out["N"] == pytest.approx(7.022e9, rel=5e-3)
    assert out["epochs"] == pytest.approx(9.493, rel=5e-3)
    assert 6 * out["N"] * out["D"] == pytest.approx(1e22, rel=1e-12)
    assert out["effective_fraction"] == pytest.approx(law.effective_fraction(out["epochs"]), rel=1e-9)
    assert out["loss"] <= out["chinchilla_loss_repeated"] and out["loss"] > out["chinchilla"]["loss"]


def test_effective_data_fractions():
    law = PRESETS.get("muennighoff")
    assert law.effective_fraction(4) == pytest.approx(0.931, abs=5e-4)
    assert law.effective_fraction(16) == pytest.approx(0.661, abs=5e-4)


def test_plentiful_data_gives_the_chinchilla_plan_and_chinchilla_laws_borrow_decay_constants():
    for name in ("muennighoff", "epoch"):
        out = data_constrained(PRESETS.get(name), 1e21, 1e15)
        plan = P.compute_optimal(PRESETS.get(name), 1e21)
        assert out.N == pytest.approx(plan.N_opt, rel=1e-4) and out.loss == pytest.approx(plan.loss, abs=1e-9)
    borrowed = muennighoff_law(PRESETS.get("epoch"))
    assert (borrowed.R_D_star, borrowed.R_N_star) == (MUENNIGHOFF_R_D_STAR, MUENNIGHOFF_R_N_STAR)
    assert borrowed.base == PRESETS.get("epoch")


# --- de Vries 2023 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected,k_min", [
    ("hoffmann", {0.75: 2.8, 0.5: 20.8, 0.3: 105.5}, 0.097),
    ("epoch", {0.75: 3.4, 0.5: 25.9, 0.3: 161.4}, 0.146),
])
def test_overhead_table(name, expected, k_min):
    """de Vries's formula (Hoffmann rounded, k_N = 0.5: k_D = 2.416, overhead 20.8 %; docs/science.md)."""
    law = PRESETS.get(name)
    table = overhead_table(law, 1e23, [*expected, 1.0, 0.05])
    rows = {row.k_N: row for row in table["rows"]}
    for k, percent in expected.items():
        assert 100 * rows[k].overhead == pytest.approx(percent, abs=0.1)
        assert law.loss(rows[k].N, rows[k].D) == pytest.approx(table["loss"], abs=1e-12)  # same loss
        assert rows[k].flops == pytest.approx(1e23 * (1 + rows[k].overhead), rel=1e-12)
    if name == "hoffmann":
        assert rows[0.5].k_D == pytest.approx(2.416, abs=1e-3)
    assert rows[1.0].overhead == pytest.approx(0.0, abs=1e-12)
    assert table["k_N_min"] == pytest.approx(k_min, abs=5e-4)
    assert math.isinf(rows[0.05].overhead) and rows[0.05].to_dict()["overhead"] is None


# --- intervals ----------------------------------------------------------------------------------------------


def _samples(law, n=400, seed=1):
    rng = np.random.default_rng(seed)
    theta = np.array([math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta])
    sd = np.array([0.25, 0.5, 0.014, 0.015, 0.02])
    corr = np.eye(5)
    corr[0, 3] = corr[3, 0] = 0.9  # A with alpha, B with beta, as in real fits
    corr[1, 4] = corr[4, 1] = 0.95
    draws = rng.multivariate_normal(theta, corr * np.outer(sd, sd), size=n)
    return [dict(E=math.exp(t[2]), A=math.exp(t[0]), B=math.exp(t[1]), alpha=t[3], beta=t[4]) for t in draws]


def test_intervals_from_a_bootstrapped_fit():
    law = PRESETS.get("epoch")
    fit = {**law.to_dict(), "a": law.a, "b": law.b, "samples": _samples(law)}
    fitted, uncertainty = U.law_from_fit(fit)
    assert fitted == law and uncertainty.method == "mvn" and uncertainty.samples.shape == (400, 5)
    out = U.budget_intervals(fitted, CHINCHILLA_C, uncertainty)
    point = P.compute_optimal(law, CHINCHILLA_C)
    for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
        lo, hi = out[key]
        assert lo < getattr(point, key) < hi
        assert out[f"{key}_median"] == pytest.approx(getattr(point, key), rel=0.05)
    assert out["a"][0] < law.a < out["a"][1] and out["level"] == 0.8 and out["n_draws"] > 9900
    # the same draws again (seeded), and the percentile method over the samples themselves
    assert U.budget_intervals(fitted, CHINCHILLA_C, uncertainty) == out
    pct = U.budget_intervals(fitted, CHINCHILLA_C, U.Uncertainty(samples=uncertainty.samples, method="percentile"))
    assert pct["n_draws"] == 400 and pct["tokens_per_param"][0] < point.tokens_per_param < pct["tokens_per_param"][1]


def test_fit_layouts_theta_rows_and_cov_log_agree():
    """The same bootstrap as dict samples, as log-space `theta` rows, as rows in fit.KEYS order (E, A, B, alpha,
    beta, a, b, G) under `bootstrap`, and as its `cov_log` alone, gives the same MVN band."""
    law = PRESETS.get("epoch")
    samples = _samples(law)
    rows = [[s[k] for k in U.PARAMS] + [0.5, 0.5, 1.0] for s in samples]
    theta = [[math.log(s["A"]), math.log(s["B"]), math.log(s["E"]), s["alpha"], s["beta"]] for s in samples]
    bands = []
    for extra in ({"samples": samples}, {"theta": theta}, {"bootstrap": {"samples": rows, "n": 400}},
                  {"cov_log": np.cov(np.array(theta), rowvar=False).tolist()}):
        fitted, uncertainty = U.law_from_fit({**law.to_dict(), **extra})
        bands.append(U.budget_intervals(fitted, 1e24, uncertainty)["tokens_per_param"])
    for band in bands[1:]:
        np.testing.assert_allclose(band, bands[0], rtol=1e-9)


def test_identical_samples_give_a_zero_width_band_and_other_fit_layouts_parse():
    law = PRESETS.get("hoffmann-tex")
    columns = {k: [v] * 5 for k, v in law.to_dict().items()}
    fitted, uncertainty = U.law_from_fit({**law.to_dict(), "bootstrap": {"samples": columns}})
    curve = U.allocation_curve(fitted, [1e20, 1e24], U.Uncertainty(samples=uncertainty.samples, method="percentile"))
    np.testing.assert_allclose(curve["N_opt_lo"], curve["N_opt"], rtol=1e-12)
    np.testing.assert_allclose(curve["tokens_per_param_hi"], curve["tokens_per_param"], rtol=1e-12)
    se = {"E": 0.03, "A": 120.0, "B": 1300.0, "alpha": 0.015, "beta": 0.02, "a": 0.02}
    _, only_se = U.law_from_fit({**law.to_dict(), "se": se, "ci": {"a": [0.4, 0.5]}})
    assert only_se.method == "independent" and only_se.ci == {"a": (0.4, 0.5)}
    band = U.budget_intervals(law, 1e22, only_se)
    assert "correlations" in band["note"] and band["fit_ci"] == {"a": [0.4, 0.5]}
    assert U.law_from_fit(law.to_dict())[1] is None
    for bad in ({"E": 1.8}, {**law.to_dict(), "alpha": "x"}, [], {**law.to_dict(), "samples": [{"E": 1}]}):
        with pytest.raises(ValueError):
            U.law_from_fit(bad)


# --- model shape --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9, 3e9, 1e10, 3e10, 1e11])
@pytest.mark.parametrize("vocab,tie", [(256, False), (32_000, False), (128_256, True)])
def test_model_shape_is_within_five_percent_of_total(target, vocab, tie):
    smallest = param_groups(ModelConfig(vocab_size=vocab, d_model=64, n_layers=1, n_heads=1,
                                        tie_embeddings=tie)).total
    if smallest > 1.05 * target:
        with pytest.raises(ValueError, match="no shape"):
            model_shape(target, vocab_size=vocab, tie_embeddings=tie)
        return
    shape = model_shape(target, vocab_size=vocab, tie_embeddings=tie)
    c = shape.config
    assert abs(shape.total / target - 1) <= 0.05 and shape.total == param_groups(c).total
    assert c.head_dim in (64, 128) and c.n_heads * c.head_dim == c.d_model and c.vocab_size == vocab
    if target >= 1e8:  # enough layers for the aspect rule to bite: within a factor 2 of its target
        assert 0.5 < shape.aspect / shape.to_dict()["target_aspect_ratio"] < 2


def test_model_shape_rule_and_gqa():
    shape = model_shape(7e9, vocab_size=32_000, kv_ratio=8)
    d = shape.to_dict()
    assert d["head_dim"] == 128 and d["n_heads"] % d["n_kv_heads"] == 0 and d["n_heads"] // d["n_kv_heads"] <= 8
    assert 100 < d["aspect_ratio"] < 150 and abs(d["rel_error"]) <= 0.05
    assert f"model.d_model={d['d_model']}" in d["overrides"]
    assert model_shape(2e7, vocab_size=256).config.head_dim == 64


def test_shape_search_refuses_a_target_it_cannot_walk_to():
    """Beyond MAX_PARAMS the search (head-size steps of d_model) would run for hours: refused, naming N."""
    from isoflop.science.errors import ScienceError
    from isoflop.science.shape import MAX_PARAMS, model_shape

    with pytest.raises(ScienceError, match="beyond the shape search") as e:
        model_shape(MAX_PARAMS * 500)
    assert e.value.key == "n_params"
