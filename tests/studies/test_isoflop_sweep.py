"""The isoflop-sweep study end to end at smoke size: both sweeps planned on the same cells, trained with --jobs 2,
fitted and reported; a rerun trains nothing; the FLOP share is the plans' bills."""

from __future__ import annotations

import json

import pytest

from isoflop.cli import main
from isoflop.studies import get_study
from isoflop.sweep.grid import design
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.spec import parse_spec


def test_both_modes_plan_the_same_cells(tmp_path):
    study = get_study("isoflop-sweep")
    for smoke in (True, False):
        plans = {m: design(parse_spec(study.spec_text(m, smoke=smoke)), tmp_path) for m in ("grid", "fork")}
        cells = {m: sorted((r.budget, r.params["total"]) for r in p.runs if r.role != "trunk" or r.budget)
                 for m, p in plans.items()}
        assert cells["grid"] == cells["fork"]
        assert plans["grid"].bills == pytest.approx(plans["fork"].bills)  # both modes' bills on the same cells
        assert study.rung_flops(smoke=smoke) > max(plans["grid"].budgets)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("isoflop_sweep") / "out"
    assert main(["report", "isoflop-sweep", "--out", str(out), "--smoke", "--jobs", "2"]) == 0
    return out


def test_smoke_writes_the_report_from_two_sweeps(smoke_study):
    out = smoke_study
    results = json.loads((out / "results.json").read_text())
    assert (out / "isoflop-sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert [(r["convention"], r["approach"]) for r in results["rows"]] == [
        (c, k) for c in ("total", "non_embedding", "6nd") for k in (1, 2, 3)]
    spent = results["data"]["flops_spent"]
    for mode in ("grid", "fork"):
        plan = SweepDir(out / mode).read_plan()
        assert plan.mode == mode
        assert all(SweepDir(out / mode).run_dir(r.key).is_complete() for r in plan.runs if r.role != "rung")
        assert spent[mode] == pytest.approx(plan.bills[mode])
    assert results["data"]["fork_share"] == pytest.approx(spent["fork"] / spent["grid"])
    assert 0 < results["data"]["fork_share"] < 1


def test_a_rerun_trains_nothing(smoke_study, capsys):
    before = {p: p.stat().st_mtime_ns for p in smoke_study.rglob("run.json")}
    assert main(["report", "isoflop-sweep", "--out", str(smoke_study), "--smoke", "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "0 to train" in err and " start " not in err
    assert {p: p.stat().st_mtime_ns for p in smoke_study.rglob("run.json")} == before


def test_set_is_refused_with_one_line(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["report", "isoflop-sweep", "--out", str(out), "--smoke", "--set", "train.seed=1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--set" in err
    assert not out.exists()
