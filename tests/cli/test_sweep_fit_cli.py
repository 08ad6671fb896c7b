"""`isoflop sweep fit|report|predict` from the command line: one JSON object or a table, the files written,
and bad input as one line with exit 2."""

from __future__ import annotations

import json

import pytest

from isoflop.cli import main
from tests.sweep.synthetic import make_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("cli") / "s")


def test_fit_json_is_one_object_and_fit_json_holds_it(sweep, capsys):
    assert main(["sweep", "fit", str(sweep.path), "--json", "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == sweep.read_fit()
    assert {a["convention"] for a in out["allocations"]} == {"total", "non_embedding", "6nd"}
    assert out["runs"]["fitted"] == 15 and out["bootstrap"] is None


def test_fit_prints_a_table(sweep, capsys):
    assert main(["sweep", "fit", str(sweep.path), "--bootstrap", "10"]) == 0
    text = capsys.readouterr().out
    assert "15 of 15 planned runs fitted" in text and "80%, 10 bootstrap resamples" in text
    assert text.count("non-embedding N, counted FLOPs") == 3


def test_report_lists_what_it_wrote(sweep, capsys):
    assert main(["sweep", "report", str(sweep.path), "--bootstrap", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["report", "results", "isoflop", "allocation", "frontier",
                                                   "residuals"]
    assert sweep.report_file.is_file() and sweep.results_file.is_file()


@pytest.mark.parametrize("argv, where", [
    (["sweep", "predict", "{s}", "--flops", "1e17"], "--flops"),
    (["sweep", "predict", "{s}", "--flops", "1e18", "--dry-run"], "--flops"),
    (["sweep", "fit", "{s}", "--bootstrap", "1"], "--bootstrap"),
    (["sweep", "fit", "{s}/nowhere"], "not a sweep folder"),
])
def test_bad_input_is_one_line_and_exit_2(sweep, capsys, argv, where):
    assert main([a.format(s=sweep.path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and where in err[0]


def test_too_few_runs_names_the_sweep(tmp_path, capsys):
    small = make_sweep(tmp_path / "small", budgets=(1e16,), factors=(1.0,))
    assert main(["sweep", "fit", str(small.path)]) == 2
    err = capsys.readouterr().err
    assert str(small.path) in err and "1 of 1 planned runs are fitted" in err
