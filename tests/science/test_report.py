"""science/report.py: a study's data rendered to report.md, results.json and a PNG."""

from __future__ import annotations

import json
import math

import pytest

from isoflop.science.report import format_cell, markdown_table, validate, write_report


def _report(**changes):
    report = {
        "study": "demo", "title": "Demo study", "claim": "Lines go up.", "setting": "Two toy series.",
        "findings": ["the first finding"],
        "columns": [{"key": "name", "label": "name", "format": "s"},
                    {"key": "loss", "label": "loss |x|", "format": ".3f"},
                    {"key": "n", "label": "n", "format": "d"}],
        "rows": [{"name": "a", "loss": 1.23456, "n": 3}, {"name": "b|c", "loss": math.nan, "n": 4},
                 {"name": "c", "loss": None, "n": 5}],
        "plot": {"title": "demo", "panels": [
            {"title": "p1", "xlabel": "x", "ylabel": "y", "xscale": "log2",
             "series": [{"label": "s1", "x": [1, 2, 4], "y": [1.0, 2.0, 3.0], "style": "o-"}],
             "hlines": [{"y": 2.5, "label": "bound"}]},
            {"title": "p2", "xlabel": "x", "ylabel": "y", "yscale": "log",
             "series": [{"label": "s2", "x": [0, 1], "y": [1.0, 10.0]}]}]},
        "data": {"curve": [1.0, math.inf]},
    }
    report.update(changes)
    return report


def test_markdown_table_is_exact():
    cols = _report()["columns"]
    expected = ("| name | loss \\|x\\| | n |\n"
                "|---|---|---|\n"
                "| a | 1.235 | 3 |\n"
                "| b\\|c | nan | 4 |\n"
                "| c | n/a | 5 |")
    assert markdown_table(cols, _report()["rows"]) == expected


def test_format_cell():
    assert format_cell(0.5, "+.2f") == "+0.50"
    assert format_cell(True, ".3f") == "True"  # booleans are not numbers in a table
    assert format_cell(-math.inf) == "-inf"
    assert format_cell(12, "g") == "12"


def test_write_report_writes_the_three_files(tmp_path):
    paths = write_report(_report(), tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.md", "results.json", "demo.png"}
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["report"].read_text()
    assert text.startswith("# Demo study")
    assert "**Claim.** Lines go up." in text and "- the first finding" in text and "![demo](demo.png)" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3  # header, rule, one line per row
    results = json.loads(paths["results"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert results["rows"][1]["loss"] is None and results["data"]["curve"] == [1.0, None]  # strict JSON
    assert results["rows"][0] == {"name": "a", "loss": 1.23456, "n": 3}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_validate_names_what_is_missing():
    with pytest.raises(ValueError, match="claim"):
        validate({k: v for k, v in _report().items() if k != "claim"})
    with pytest.raises(ValueError, match=r"row 0 lacks columns \['n'\]"):
        validate(_report(rows=[{"name": "a", "loss": 1.0}]))
    bad_plot = {"panels": [{"series": [{"label": "s", "x": [1, 2], "y": [1.0]}]}]}
    with pytest.raises(ValueError, match="2 x values, 1 y values"):
        validate(_report(plot=bad_plot))


def test_report_module_loads_without_matplotlib_work():
    import subprocess
    import sys

    code = "import sys, isoflop.science.report; sys.exit('matplotlib' in sys.modules or 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
