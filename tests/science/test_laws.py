"""Scaling laws against their published constants, allocations and worked examples (docs/science.md names the
source of every number checked here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoflop.science.errors import ScienceError
from isoflop.science.laws import (
    PRESETS,
    ChinchillaLaw,
    KaplanLaw,
    MuennighoffLaw,
    law_from_dict,
    parse_law,
)

CHINCHILLA_C = 6 * 70e9 * 1.4e12  # 5.88e23, Chinchilla's own budget (70B parameters, 1.4T tokens)

laws = st.builds(
    ChinchillaLaw,
    E=st.floats(0.0, 5.0), A=st.floats(1.0, 1e5), B=st.floats(1.0, 1e5),
    alpha=st.floats(0.05, 2.0), beta=st.floats(0.05, 2.0))


@settings(max_examples=200, deadline=None)
@given(law=laws, log_c=st.floats(15.0, 30.0))
def test_allocation_closes_on_the_budget(law, log_c):
    C = 10.0**log_c
    N, D = law.optimal(C)
    assert abs(6 * N * D - C) <= 1e-12 * C
    assert law.a + law.b == pytest.approx(1.0, abs=1e-15)
    assert D / N == pytest.approx(law.tokens_per_param(C), rel=1e-12)
    # vectorised budgets give the same numbers
    Ns, Ds = law.optimal(np.array([C, 2 * C]))
    assert Ns[0] == pytest.approx(N, rel=1e-14) and Ds[0] == pytest.approx(D, rel=1e-14)


@settings(max_examples=50, deadline=None)
@given(law=laws, log_c=st.floats(18.0, 26.0))
def test_optimum_is_the_minimum_along_the_isoflop_line(law, log_c):
    C = 10.0**log_c
    N, _ = law.optimal(C)
    for k in (0.9, 0.99, 1.01, 1.1):
        assert law.loss(k * N, C / (6 * k * N)) >= law.loss_at(C) - 1e-12 * law.loss_at(C)


def test_closed_forms_match_hoffmann_eq4():
    law = PRESETS.get("hoffmann-tex")
    al, be, A, B = law.alpha, law.beta, law.A, law.B
    assert law.a == be / (al + be) and law.b == al / (al + be)
    assert law.G == pytest.approx((al * A / (be * B)) ** (1 / (al + be)), rel=1e-15)
    N, D = law.optimal(1e21)
    assert N == pytest.approx(law.G * (1e21 / 6) ** law.a, rel=1e-13)
    assert D == pytest.approx((1e21 / 6) ** law.b / law.G, rel=1e-13)
    assert law.loss(N, D) == pytest.approx(law.E + A / N**al + B / D**be, rel=1e-15)
    assert law.loss_at(1e21) == law.loss(N, D)


@pytest.mark.parametrize("name, ratio", [("hoffmann-tex", 59.0), ("hoffmann", 92.8), ("epoch", 18.3)])
def test_tokens_per_parameter_at_chinchilla_budget(name, ratio):
    # what each preset's constants imply at Chinchilla's budget (docs/science.md, "Checks"), ± 0.1
    assert PRESETS.get(name).tokens_per_param(CHINCHILLA_C) == pytest.approx(ratio, abs=0.1)


def test_loss_broadcasts():
    law = PRESETS.get("epoch")
    N = np.array([1e8, 1e9, 1e10])[:, None]
    D = np.array([1e9, 1e10])[None, :]
    out = law.loss(N, D)
    assert out.shape == (3, 2)
    assert out[1, 0] == law.loss(1e9, 1e9)
    assert isinstance(law.loss(1e9, 1e10), float)


def test_preset_constants():
    # Hoffmann rounded and TeX, Epoch, Kaplan, Muennighoff (docs/science.md, "Law presets")
    assert PRESETS.get("hoffmann") == ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    assert PRESETS.get("hoffmann-tex") == ChinchillaLaw(E=1.69337368, A=406.401018, B=410.722827,
                                                    alpha=0.33917084, beta=0.2849083)
    assert PRESETS.get("hoffmann-tex").theta == pytest.approx((6.0073404, 6.0179186, 0.5267228, 0.33917084,
                                                           0.2849083), abs=1e-7)
    epoch = PRESETS.get("epoch")
    assert (epoch.A, epoch.B, epoch.E) == pytest.approx((482.006, 2085.434, 1.81686), abs=1e-3)
    assert (epoch.alpha, epoch.beta) == (0.34781303, 0.36585412)
    assert PRESETS.get("kaplan") == KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
    m = PRESETS.get("muennighoff")
    assert (m.base.A, m.base.B, m.base.E) == pytest.approx((520.82, 1487.72, 1.8691), abs=5e-3)
    assert m.base.alpha == m.base.beta == 0.3526596
    assert (m.R_D_star, m.R_N_star) == (15.387756, 5.309743)
    assert m.base.tokens_per_param(1e22) == pytest.approx(19.61, abs=0.01)  # α = β: a constant ratio


def test_kaplan_joint_law():
    law = PRESETS.get("kaplan")
    N, D = 1.5e9, 3e10
    expected = ((6.4e13 / N) ** (0.076 / 0.103) + 1.8e13 / D) ** 0.103
    assert law.loss(N, D) == pytest.approx(expected, rel=1e-14)
    # with unlimited data it reduces to L(N) = (N_c/N)^α_N (Kaplan eq. 1.5)
    assert law.loss(N, 1e300) == pytest.approx((6.4e13 / N) ** 0.076, rel=1e-12)


def test_muennighoff_readme_examples():
    # huggingface/datablations README's worked examples, to 1e-9
    law = PRESETS.get("muennighoff")
    assert law.loss(6.34e9, 25e9, D_total=242e9) == pytest.approx(2.2256440890, abs=1e-9)
    assert law.loss(8.67e9, 25e9, D_total=178e9) == pytest.approx(2.2269634075, abs=1e-9)
    assert law.loss(6.34e9, 25e9, epochs=242 / 25) == pytest.approx(2.2256440890, abs=1e-9)
    N, D = law.optimal(1e22, 25e9)
    assert N == pytest.approx(7.022e9, rel=5e-3) and D == pytest.approx(2.373e11, rel=5e-3)
    with pytest.raises(ScienceError):
        law.loss(1e9, 1e10)


def test_muennighoff_effective_data():
    law = PRESETS.get("muennighoff")
    table = {1: 1.000, 2: 0.984, 4: 0.931, 8: 0.828, 16: 0.661, 40: 0.379}  # D'/D from the formula
    for epochs, fraction in table.items():
        assert law.effective_fraction(epochs) == pytest.approx(fraction, abs=5e-4)
    U = 1e9
    assert law.effective_data(U, 1e6 * U) == pytest.approx(16.39 * U, rel=1e-3)  # limit (1 + R_D*)·U
    n_opt = law.unique_params(1e15, U)
    assert law.effective_params(1e6 * n_opt, U) == pytest.approx(6.31 * n_opt, rel=1e-3)
    # the unique-parameter cap is the compute-optimal N for the unique tokens
    C = 6 * n_opt * U
    assert law.base.optimal(C)[0] == pytest.approx(n_opt, rel=1e-10)
    # one epoch with no excess parameters is plain Chinchilla; excess parameters are worth less
    assert law.loss(0.5 * n_opt, U, epochs=1) == pytest.approx(law.base.loss(0.5 * n_opt, U), rel=1e-14)
    assert law.loss(4 * n_opt, U, epochs=1) > law.base.loss(4 * n_opt, U)


@pytest.mark.parametrize("name", PRESETS.names())
def test_presets_round_trip_through_text_and_dict(name):
    law = PRESETS.get(name)
    assert parse_law(name) is law and name in PRESETS.names()
    assert law_from_dict(law.to_dict()) == law
    text = ",".join(f"{k}={v!r}" for k, v in law.to_dict().items())
    assert parse_law(text) == law


def test_parse_user_parameters_and_overrides():
    law = parse_law("E=1.8,A=480,B=2100,alpha=0.35,beta=0.37")
    assert law == ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    assert parse_law(" E = 1.8 , A=480, B=2100,alpha=0.35,beta=0.37 ") == law
    assert parse_law("hoffmann-tex,E=1.8") == ChinchillaLaw(E=1.8, A=406.401018, B=410.722827,
                                                             alpha=0.33917084, beta=0.2849083)
    m = parse_law("muennighoff,R_D_star=10")
    assert isinstance(m, MuennighoffLaw) and m.R_D_star == 10.0 and m.base == PRESETS.get("muennighoff").base
    k = parse_law("N_c=6.4e13,D_c=1.8e13,alpha_N=0.076,alpha_D=0.103")
    assert k == PRESETS.get("kaplan")


@pytest.mark.parametrize("text, key", [
    ("hofman", "hofman"),
    ("E=1.8,A=480,B=2100,alpha=0.35", "beta"),
    ("E=1.8,A=480,B=2100,alpha=x,beta=0.37", "alpha"),
    ("E=1.8,A=480,B=2100,alpha=0.35,beta=0.37,gamma=1", "gamma"),
    ("E=1.8,A=-480,B=2100,alpha=0.35,beta=0.37", "A"),
    ("E=1.8,A=480,B=2100,alpha=0,beta=0.37", "alpha"),
    ("E=nan,A=480,B=2100,alpha=0.35,beta=0.37", "E"),
    ("E=1.8,E=1.9,A=480,B=2100,alpha=0.35,beta=0.37", "E"),
    ("kaplan,E=1.8", "E"),
    ("epoch,beta", "beta"),
    ("", "law"),
    ("N_c=6.4e13,D_c=1.8e13,alpha_N=0.076", "alpha_D"),
])
def test_parse_errors_name_the_key(text, key):
    with pytest.raises(ValueError) as info:
        parse_law(text)
    assert isinstance(info.value, ScienceError) and info.value.key == key
    message = str(info.value)
    assert message.startswith(f"{key}:") and "\n" not in message


def test_array_valued_law_is_a_batch_of_laws():
    thetas = np.array([PRESETS.get("epoch").theta, PRESETS.get("hoffmann-tex").theta])
    batch = ChinchillaLaw.from_log(*thetas.T)
    ratios = batch.tokens_per_param(CHINCHILLA_C)
    assert ratios == pytest.approx([PRESETS.get("epoch").tokens_per_param(CHINCHILLA_C),
                                    PRESETS.get("hoffmann-tex").tokens_per_param(CHINCHILLA_C)], rel=1e-12)
    assert math.isclose(ChinchillaLaw.from_log(*thetas[0]).A, PRESETS.get("epoch").A, rel_tol=1e-15)


@settings(max_examples=100, deadline=None)
@given(law=laws, log_c=st.floats(15.0, 30.0))
def test_closed_form_inverses(law, log_c):
    # the tokens with which N_opt(C) is compute-optimal are D_opt(C); the least-compute (N, D) reaching the
    # compute-optimal loss at C is the compute-optimal point of C itself
    C = 10.0**log_c
    N, D = law.optimal(C)
    assert law.optimal_tokens(N) == pytest.approx(D, rel=1e-9)
    if law.loss_at(C) - law.E > 1e-9 * law.E:
        N_l, D_l = law.optimal_at_loss(law.loss_at(C))
        assert N_l == pytest.approx(N, rel=1e-6) and D_l == pytest.approx(D, rel=1e-6)


def test_every_law_says_its_chinchilla_form():
    # the planner asks a law for its Chinchilla form instead of inspecting its type
    assert PRESETS.get("epoch").chinchilla is PRESETS.get("epoch")
    assert PRESETS.get("muennighoff").chinchilla is PRESETS.get("muennighoff").base
    assert PRESETS.get("kaplan").chinchilla is None
    with pytest.raises(ScienceError, match="irreducible") as info:
        PRESETS.get("epoch").optimal_at_loss(1.5)
    assert info.value.key == "loss"


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ScienceError, match="did you mean 'hoffmann'"):
        parse_law("hofman")
    with pytest.raises(ScienceError, match="did you mean 'alpha'"):
        parse_law("E=1.8,A=480,B=2100,alhpa=0.35,beta=0.37")
