"""`sweep report`: report.md, results.json and the plots of a synthetic sweep, every file there and readable,
the excluded runs and the published exponents in the markdown, and results.json the fit plus the references."""

from __future__ import annotations

import json
import shutil

import pytest

from isoflop.sweep.fit import fit_sweep
from isoflop.sweep.layout import PLOTS
from isoflop.sweep.report import REFERENCES, fit_table, sweep_report
from tests.sweep.synthetic import make_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    sweep = make_sweep(tmp_path_factory.mktemp("r") / "s", lr_multipliers=(0.5, 1.0, 2.0),
                       lr_best=lambda C, f: 3.0 if f == 4.0 else 1.0)
    shutil.rmtree(sweep.run_dir(sweep.read_plan().runs[0].key).path)  # one run never started
    return sweep, sweep_report(sweep, bootstrap=20)


def test_every_file_is_written_and_reads(reported):
    sweep, paths = reported
    assert set(paths) == {"report", "results", *PLOTS}
    for kind in PLOTS:
        data = paths[kind].read_bytes()
        assert paths[kind] == sweep.plot_file(kind) and data[:8] == PNG_MAGIC and len(data) > 20_000
    assert not [p for p in sweep.report_dir.iterdir() if p.name.startswith(".")]  # no temporaries left
    results = json.loads(paths["results"].read_text())
    assert results["references"] == REFERENCES
    assert results["plots"] == {k: v for k, v in (("isoflop", "isoflop.png"), ("allocation", "allocation.png"),
                                                   ("frontier", "frontier.png"), ("residuals", "residuals.png"))}
    fit = sweep.read_fit()
    assert {k: results[k] for k in fit} == fit  # results.json is the fit, plus the references and plot names


def test_the_markdown_shows_the_allocation_the_edges_the_left_out_runs_and_the_references(reported):
    sweep, paths = reported
    text = paths["report"].read_text()
    first = sweep.read_plan().runs[0].key
    assert f"| {first} | pending | not started |" in text
    for ref in ("Hoffmann et al. 2022", "Besiroglu et al. 2024", "Dubey et al. 2024"):
        assert ref in text
    assert text.count("| total N, counted FLOPs |") == 3 and "| total N, C = 6ND |" in text
    assert "at high edge" in text and "## Learning-rate grid" in text
    for kind in PLOTS:
        assert f"({sweep.plot_file(kind).name})" in text


def test_the_fit_table_names_what_was_left_out(reported):
    sweep, _ = reported
    text = fit_table(sweep.read_fit())
    assert "44 of 45 planned runs fitted" in text and "pending: not started" in text
    assert "best learning rate at the grid's edge" in text


def test_a_report_without_approach_3_still_draws_what_it_has(tmp_path):
    # whatever approach 2 can fit, approach 3 can too (2 budgets x 3 sizes >= 5 runs): take its fit away
    sweep = make_sweep(tmp_path / "s", budgets=(1e16, 1e17), factors=(0.5, 1.0, 2.0))
    result = fit_sweep(sweep, bootstrap=0)
    result.fits.pop(("total", 3))
    from isoflop.sweep import plots

    assert plots.plot_residuals(result, tmp_path / "r.png") is None
    assert plots.plot_frontier(result, tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC
    assert plots.plot_allocation(result, REFERENCES, tmp_path / "a.png").read_bytes()[:8] == PNG_MAGIC
