"""`sweep predict`: the rung's N_opt from a known fit, the refusal of a budget inside the sweep's, and the whole
loop (plan, train, measure, keep the prediction across later fits) with stand-ins for the grid's `rung_run` and
the executor's `run_planned` (the real ones are tested by their owners)."""

from __future__ import annotations

import importlib
import math
import sys
import types

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from isoflop.errors import ConfigError
from isoflop.science.result import ScalingFit
from isoflop.sweep.fit import CostModel, SweepFit, sweep_fit
from isoflop.sweep.plan import PlannedRun
from isoflop.sweep.predict import check_flops, prediction, sweep_predict
from isoflop.sweep.report import sweep_report
from isoflop.train.spec import ExperimentConfig
from tests.sweep.synthetic import LAW, make_sweep, shape, write_run


def _known(cost: CostModel) -> SweepFit:
    """A SweepFit holding the true law as its approach-3 fit (no fitting involved)."""
    fit = ScalingFit(approach=3, a=LAW.a, b=LAW.b, k_N=0.0, k_D=0.0, success=True, message="", n_points=15,
                     detail=None, law=LAW)
    from isoflop.sweep.points import SweepPoints

    found = SweepPoints(points=[], best=[], lr_cells=[], rungs=[], excluded=[], n_planned=0)
    return SweepFit(sweep=None, mode="grid", budgets=[1e16], found=found, bootstrap=None, costs={"total": cost},
                    fits={("total", 3): fit})


def test_n_opt_from_a_known_law_is_hoffmanns_optimum_under_6nd():
    p = prediction(_known(CostModel(6.0, 1.0, False)), 1e20)
    N, D = LAW.optimal(1e20)
    assert p["N_opt"] == pytest.approx(N, rel=1e-12) and p["D_opt"] == pytest.approx(D, rel=1e-12)
    assert p["predicted_loss_at_optimum"] == pytest.approx(LAW.loss_at(1e20), rel=1e-12)
    assert (p["approach"], p["a"]) == (3, pytest.approx(LAW.a))


def test_n_opt_under_a_counted_cost_is_the_minimum_along_it():
    cost = CostModel(7.4, 0.97, True)  # C = 7.4·N^0.97·D, as counted FLOPs of small models read
    C = 1e20
    x = minimize_scalar(lambda x: LAW.loss(math.exp(x), cost.tokens(math.exp(x), C)), bounds=(10, 40),
                        method="bounded", options={"xatol": 1e-10}).x
    p = prediction(_known(cost), C)
    assert p["N_opt"] == pytest.approx(math.exp(x), rel=1e-6)
    assert p["D_opt"] * cost.k * p["N_opt"] ** cost.p == pytest.approx(C)
    assert p["a"] == pytest.approx(LAW.beta / (LAW.alpha + 0.97 * LAW.beta))


def test_a_budget_inside_the_sweep_is_refused_naming_flops(tmp_path):
    plan = make_sweep(tmp_path / "s", train=False).read_plan()
    for bad in (1e18, 5e17, -1.0, float("inf")):
        with pytest.raises(ConfigError) as e:
            check_flops(bad, plan)
        assert e.value.key == "--flops"
    assert check_flops(2e18, plan) == 2e18


def test_the_loss_needs_approach_3(tmp_path):
    result = _known(CostModel(6.0, 1.0, False))
    result.fits.clear()
    result.errors["total", 3] = "need at least 5 runs"
    with pytest.raises(ConfigError, match="approach 3"):
        prediction(result, 1e20, approach=3)


# ---------------------------------------------------------------------------------------------- the loop


@pytest.fixture
def stand_ins(monkeypatch):
    """grid.rung_run and run_one.run_planned as their contracts say, on the synthetic shapes and law."""
    trained: list[str] = []

    def rung_run(spec, spec_dir, n_params, budget, *, base=None):
        s = shape(n_params)
        tokens = int(budget / s["flops_per_token"])
        config = ExperimentConfig.from_dict({"model": {"d_model": 64 * round(s["d"] / 64)},
                                             "train": {"horizon": {"steps": tokens // 4096}}}).to_dict()
        return PlannedRun(key=f"rung-C{budget:.0e}", role="rung", budget=budget, target_params=n_params,
                          shape={"d_model": 64 * round(s["d"] / 64), "n_layers": 9, "n_heads": 9},
                          params={"total": s["N_total"]}, steps=tokens // 4096, tokens=tokens,
                          flops_per_token=s["flops_per_token"], flops=float(tokens * s["flops_per_token"]),
                          flops_6nd=6.0 * s["N_total"] * tokens, bill_flops=float(tokens * s["flops_per_token"]),
                          lr=3e-3, batch_size=16, config=config)

    def run_planned(sweep, key, *, stream=None):
        planned = sweep.read_plan().run(key)
        s = shape(planned.target_params)
        write_run(sweep.run_dir(key), planned, LAW, s, planned.tokens, 0.0, 0.0, 8)
        trained.append(key)
        return sweep.run_dir(key).read_record()

    for name, attrs in (("isoflop.sweep.grid", {"rung_run": rung_run}),
                        ("isoflop.sweep.spec", {"load_spec": lambda path: None}),
                        ("isoflop.sweep.run_one", {"run_planned": run_planned})):
        try:  # the owner's module where it exists, with the one function stood in
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            module = types.ModuleType(name)
            monkeypatch.setitem(sys.modules, name, module)
        for attr, value in attrs.items():
            monkeypatch.setattr(module, attr, value, raising=False)
    return trained


def test_dry_run_writes_and_trains_nothing(tmp_path, stand_ins):
    sweep = make_sweep(tmp_path / "s")
    before = sweep.plan_file.read_text()
    out = sweep_predict(sweep, flops=1e19, bootstrap=0, dry_run=True)
    assert out["dry_run"] and out["rung"]["role"] == "rung" and out["prediction"]["approach"] == 3
    assert sweep.plan_file.read_text() == before and not sweep.fit_file.exists() and stand_ins == []


def test_the_rung_is_planned_trained_measured_and_kept(tmp_path, stand_ins):
    sweep = make_sweep(tmp_path / "s")
    out = sweep_predict(sweep, flops=1e19, bootstrap=0)
    p = out["prediction"]
    assert stand_ins == [p["key"]]
    assert sweep.read_plan().run(p["key"]).role == "rung"
    assert p["N_planned"] == shape(p["N_opt"])["N_total"]
    # the measured loss is the true law at the rung's N and D; the law was fitted on 15 runs with σ = 0.002
    # in log loss, so ten times beyond the budgets it predicts within a few tenths of a per cent
    truth = LAW.loss(p["N_planned"], p["D_planned"])
    assert p["measured_loss"] == pytest.approx(truth)
    assert p["rel_error"] == pytest.approx(abs(p["predicted_loss"] - truth) / truth) and p["rel_error"] < 0.01
    assert sweep.read_fit()["rungs"] == [p]
    # a later fit keeps the prediction (not refitted), measures it again, and leaves the rung out of the points
    again = sweep_fit(sweep, bootstrap=0)
    assert again["rungs"][0]["predicted_loss"] == p["predicted_loss"] and again["runs"]["fitted"] == 15
    assert "1e+19" in again["allocations"][2]["at"]  # N_opt at the rung's budget is reported beside the sweep's
    paths = sweep_report(sweep, bootstrap=0)
    text = paths["report"].read_text()
    assert "## Validating rung" in text and p["key"] in text and f"{100 * p['rel_error']:.2f} %" in text


def test_no_train_leaves_the_rung_to_sweep_run(tmp_path, stand_ins):
    sweep = make_sweep(tmp_path / "s")
    out = sweep_predict(sweep, flops=1e19, bootstrap=0, train=False)
    assert stand_ins == [] and out["prediction"]["status"] == "planned"
    entry = sweep_fit(sweep, bootstrap=0)["rungs"][0]
    assert (entry["status"], entry["reason"]) == ("pending", "not started")
    sys.modules["isoflop.sweep.run_one"].run_planned(sweep, entry["key"])  # what `sweep run` would do
    measured = sweep_fit(sweep, bootstrap=0)["rungs"][0]
    assert measured["status"] == "measured" and np.isfinite(measured["rel_error"])
