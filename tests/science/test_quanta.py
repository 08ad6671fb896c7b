"""quanta: Michaud et al. 2023's Zipf ↔ α_N ↔ α_D conversions at worked values (Kaplan's α_N = 0.076 → α_D ≈ 0.0706)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoflop.science.quanta import (
    QuantaError,
    QuantaExponents,
    alpha_d_from_alpha_n,
    alpha_d_from_zipf,
    alpha_n_from_alpha_d,
    alpha_n_from_zipf,
    quanta_learned_exponent,
    zipf_from_alpha_d,
    zipf_from_alpha_n,
)


def test_kaplan_worked_example():
    # Kaplan's α_N = 0.076 implies a Zipf exponent of 1.076 and a predicted α_D of 0.0706
    assert zipf_from_alpha_n(0.076) == pytest.approx(1.076, abs=1e-12)
    assert alpha_d_from_alpha_n(0.076) == pytest.approx(0.076 / 1.076, abs=1e-15)
    assert round(alpha_d_from_alpha_n(0.076), 4) == 0.0706
    q = QuantaExponents.from_zipf(1.076)
    assert q.alpha_n == pytest.approx(0.076) and round(q.alpha_d, 4) == 0.0706
    assert q.quanta_exponent == pytest.approx(1 / 1.076)


def test_pythia_estimate():
    # the repo's LLM estimate α ≈ 0.237: Zipf 1.237, α_D = 0.237/1.237
    q = QuantaExponents.from_alpha_n(0.237)
    assert (q.zipf, q.alpha_d) == pytest.approx((1.237, 0.237 / 1.237))


@given(st.floats(min_value=1e-6, max_value=1e3))
def test_round_trips(alpha):
    d = alpha_d_from_alpha_n(alpha)
    assert d == pytest.approx(alpha / (1 + alpha), rel=1e-12) and 0 < d < 1
    assert alpha_n_from_alpha_d(d) == pytest.approx(alpha, rel=1e-9)
    z = zipf_from_alpha_n(alpha)
    assert alpha_n_from_zipf(z) == pytest.approx(alpha, rel=1e-9, abs=1e-12)
    assert alpha_d_from_zipf(z) == pytest.approx(d, rel=1e-9)
    assert zipf_from_alpha_d(d) == pytest.approx(z, rel=1e-9)
    assert quanta_learned_exponent(alpha) == pytest.approx(1 - d, rel=1e-12)  # 1/(α+1) = 1 - α/(α+1)
    a, b = QuantaExponents.from_alpha_d(d), QuantaExponents.from_alpha_n(alpha)
    assert (a.zipf, a.alpha_n, a.alpha_d, a.quanta_exponent) == pytest.approx(
        (b.zipf, b.alpha_n, b.alpha_d, b.quanta_exponent), rel=1e-9)


@pytest.mark.parametrize("call, name", [
    (lambda: alpha_n_from_zipf(1.0), "zipf"),
    (lambda: alpha_n_from_zipf(0.5), "zipf"),
    (lambda: alpha_d_from_alpha_n(-0.1), "alpha_n"),
    (lambda: alpha_n_from_alpha_d(1.0), "alpha_d"),
    (lambda: alpha_n_from_alpha_d(float("nan")), "alpha_d"),
    (lambda: QuantaExponents.from_alpha_d(0.0), "alpha_d"),
])
def test_out_of_range(call, name):
    with pytest.raises(QuantaError, match=f"^{name}: ") as info:
        call()
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
