"""One result type: the three approaches return a ScalingFit with the same common fields and JSON keys, and
intervals at one default level."""

from __future__ import annotations

import numpy as np
import pytest

from isoflop.science.bootstrap import DEFAULT_LEVEL, Bootstrap
from isoflop.science.fit import Approach3
from isoflop.science.isoflop import Approach1, Approach2
from isoflop.science.laws import PRESETS
from isoflop.science.records import Curve
from isoflop.science.result import ScalingFit

LAW = PRESETS.get("hoffmann-tex")
COMMON = {"approach", "law", "a", "b", "k_N", "k_D", "success", "message", "n_points", "intervals",
          "tokens_per_param"}


def isoflop_runs():
    N, C = [], []
    for c in np.geomspace(1e18, 1e21, 5):
        n_opt, _ = LAW.optimal(c)
        N.extend(n_opt * np.geomspace(1 / 8, 8, 9))
        C.extend([c] * 9)
    N, C = np.array(N), np.array(C)
    return N, C / (6 * N), C, LAW.loss(N, C / (6 * N))


def curves():
    out = []
    for n in np.geomspace(1e7, 1e9, 12):
        D = np.geomspace(n / 3, 500 * n, 200)
        out.append(Curve(f"N={n:.2g}", float(n), LAW.loss(n, D), {"tokens": D}))
    return out


@pytest.fixture(scope="module")
def fits():
    N, D, C, L = isoflop_runs()
    boot = Bootstrap(n=20, seed=3)
    return {1: Approach1(bootstrap=boot).fit(curves()), 2: Approach2(bootstrap=boot).fit(N, C, L),
            3: Approach3(starts=PRESETS.get("epoch"), bootstrap=boot).fit(N, D, L)}


def test_every_approach_returns_the_same_type(fits):
    for approach, fit in fits.items():
        assert isinstance(fit, ScalingFit) and fit.approach == approach and fit.success, fit.message
        assert fit.a == pytest.approx(LAW.a, abs=0.02) and fit.a + fit.b == pytest.approx(1.0, abs=0.02)
        # N_opt = k_N·C^a and D_opt = k_D·C^b close on the budget: 6·N_opt·D_opt = C
        for C in (1e19, 1e22):
            assert 6 * fit.N_opt(C) * fit.D_opt(C) == pytest.approx(C, rel=0.05)
            assert fit.N_opt(C) == pytest.approx(fit.k_N * C**fit.a, rel=1e-9)
        assert fit.intervals.level == DEFAULT_LEVEL == 0.8
        lo, hi = fit.intervals.ci["a"]
        assert lo <= fit.a <= hi and fit.intervals.se["a"] > 0
        out = fit.to_dict()
        assert COMMON <= set(out) and out["intervals"]["level"] == 0.8 and out["intervals"]["n"] == 20
    assert fits[3].law is not None and fits[1].law is None and fits[2].law is None
    assert fits[3].to_dict()["law"] == "chinchilla" and fits[2].to_dict()["law"] is None


def test_details_are_typed_per_approach(fits):
    assert fits[1].detail.C.size == fits[1].n_points
    assert len(fits[2].detail.profiles) == 5 and fits[2].n_points == 45
    assert fits[3].detail.n_starts == 1 and fits[3].n_points == 45


def test_an_extrapolated_isoflop_minimum_is_not_a_success():
    # sizes all above the optimum at every budget: each parabola's vertex lies below the sizes trained
    N, C = [], []
    for c in np.geomspace(1e18, 1e21, 4):
        n_opt, _ = LAW.optimal(c)
        N.extend(n_opt * np.geomspace(3, 30, 7))
        C.extend([c] * 7)
    N, C = np.array(N), np.array(C)
    fit = Approach2().fit(N, C, LAW.loss(N, C / (6 * N)))
    assert not fit.success and "outside the sizes trained" in fit.message
