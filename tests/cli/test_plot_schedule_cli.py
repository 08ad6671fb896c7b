"""`isoflop info RECIPE --plot-schedule FILE.png`."""

from __future__ import annotations

import pytest

from isoflop.cli import main

pytest.importorskip("matplotlib")


@pytest.mark.parametrize("kind", ["cosine", "inverse_sqrt", "constant_cooldown"])
def test_plot_schedule_writes_a_png(tmp_path, capsys, kind):
    out = tmp_path / "lr.png"
    assert main(["info", "tiny", "--set", f"schedule.kind={kind}", "--plot-schedule", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "horizon" in capsys.readouterr().out


def test_plot_schedule_into_a_missing_directory_exits_2(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "lr.png"
    assert main(["info", "tiny", "--plot-schedule", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--plot-schedule" in err[0]
    assert not out.exists()
