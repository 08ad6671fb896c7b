"""`isoflop frontier` on a table and on real run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isoflop.cli import main


def _table(path):
    rows = ["model,N,cost,loss"]
    for name, n in (("small", 1e8), ("large", 1.6e9)):
        for d in np.logspace(8, 11.5, 40):
            rows.append(f"{name},{n},{6 * n * d},{1.7 + 400 / n ** 0.34 + 410 / d ** 0.28}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_table_frontier_json_and_plot(tmp_path, capsys):
    table = _table(tmp_path / "curves.csv")
    assert main(["frontier", str(table), "--json", "--plot", str(tmp_path / "f.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == ["small", "large"]
    [cross] = out["crossovers"]
    assert (cross["before"], cross["after"], cross["larger_wins"]) == ("small", "large", True)
    # where the two analytic curves meet: 400/N^0.34 + 410/D^0.28 equal at the same C = 6ND
    assert 1e19 < cross["cost"] < 1e21
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,cost\nsmall,1\n")
    assert main(["frontier", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0]
    assert main(["frontier", str(tmp_path / "no_such_run")]) == 2


@pytest.mark.parametrize("axis", ["flops", "elapsed_s"])
def test_frontier_of_real_runs(tmp_path, corpus_dir, cache_dir, axis, capsys):
    import os

    from isoflop.cli.common import load_experiment
    from isoflop.train.run import run_training
    from tests.conftest import tiny_overrides

    for name, width in (("narrow", 16), ("wide", 48)):
        cfg = load_experiment("tiny", tiny_overrides(corpus_dir, steps=8) + [f"model.d_model={width}", "eval.every=0"])
        with open(os.devnull, "w") as devnull:
            run_training(cfg, tmp_path / name, stream=devnull)
    assert main(["frontier", str(tmp_path / "narrow"), str(tmp_path / "wide"), "--axis", axis, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["models"]) == ["narrow", "wide"] and out["segments"]
