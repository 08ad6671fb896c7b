"""The plan's plain-data form round-trips, and bad plan files are refused naming the file."""

from __future__ import annotations

import pytest

from isoflop.errors import ConfigError
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.plan import InitPoint, PlannedRun, SweepPlan


def _run(key: str, **kw) -> PlannedRun:
    base = dict(key=key, role="grid", budget=1e12, target_params=1e6, shape={"d_model": 64}, params={"total": 10},
                steps=3, tokens=48, flops_per_token=60, flops=2880.0, flops_6nd=2880.0, bill_flops=2880.0, lr=1e-3,
                batch_size=4, config={"train": {"seed": 0}})
    return PlannedRun(**{**base, **kw})


def test_round_trip_through_the_folder(tmp_path):
    plan = SweepPlan(mode="fork", budgets=[1e12], bills={"grid": 2.0, "fork": 1.0}, spec={"sizes": 3},
                     runs=[_run("t", role="trunk", budget=None), _run("f", role="fork", init_from=InitPoint(key="t", step=2))])
    sweep = SweepDir(tmp_path / "s")
    sweep.write_plan(plan)
    assert sweep.read_plan() == plan
    assert sweep.read_plan().run("f").init_from == InitPoint(key="t", step=2)


def test_with_runs_does_not_double_a_key():
    plan = SweepPlan(mode="grid", budgets=[1e12], bills={}, spec={}, runs=[_run("a")])
    assert plan.with_runs([_run("a"), _run("b", role="rung")]).keys() == ["a", "b"]


@pytest.mark.parametrize("text, problem", [
    ('[1, 2]', "not a sweep plan"),
    ('{"mode": "grid", "budgets": [], "runs": [{"key": "a"}]}', "at least key, role and config"),
    ('{"mode": "grid", "budgets": [], "runs": [{"key": "a", "role": "x", "config": {}}]}', "has role 'x'"),
    ('{"mode": "grid", "budgets": [], "runs": [{"key": "a", "role": "grid", "config": {}}]}', "lacks \\['batch_size'"),
    ('{"version": 99, "mode": "grid", "budgets": [], "runs": []}', "newer isoflop"),
    ('{"mode": "grid", ', "not valid JSON"),
])
def test_bad_plan_files_name_the_file(tmp_path, text, problem):
    sweep = SweepDir(tmp_path)
    sweep.plan_file.write_text(text)
    with pytest.raises(ConfigError, match=problem) as e:
        sweep.read_plan()
    assert str(sweep.plan_file) in str(e.value)


def test_a_folder_without_a_plan_is_not_a_sweep(tmp_path):
    with pytest.raises(ConfigError, match="not a sweep folder"):
        SweepDir(tmp_path).read_plan()
