"""`isoflop fit` on synthetic data from a known law: approaches 3, 2 and 1, JSON contract, plots, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isoflop.cli import main
from isoflop.rundir import RunDir, RunRecord
from isoflop.science.laws import PRESETS

LAW = PRESETS.get("hoffmann-tex")


def _table(path, points):
    path.write_text("N,D,L\n" + "".join(f"{n},{d},{loss}\n" for n, d, loss in points))
    return path


def _isoflop_points(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    points = []
    for c in np.geomspace(1e18, 1e21, 5):
        n_opt, _ = LAW.optimal(c)
        for k in np.geomspace(1 / 8, 8, 9):
            n = n_opt * k
            d = c / (6 * n)
            points.append((n, d, float(LAW.loss(n, d)) * np.exp(noise * rng.standard_normal())))
    return points


def test_approach3_recovers_the_law_and_prints_one_json_object(tmp_path, capsys):
    table = _table(tmp_path / "runs.csv", _isoflop_points())
    assert main(["fit", str(table), "--json", "--plot", str(tmp_path / "fit.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "objective", "success", "n_points"):
        assert key in out
    assert out["success"] and out["n_points"] == 45
    assert out["E"] == pytest.approx(LAW.E, rel=1e-4) and out["alpha"] == pytest.approx(LAW.alpha, rel=1e-4)
    assert out["a"] == pytest.approx(LAW.a, rel=1e-4)
    assert (tmp_path / "fit.png").stat().st_size > 10_000


def test_bootstrap_gives_se_and_ci_keyed_like_the_fit_and_feeds_plan(tmp_path, capsys):
    table = _table(tmp_path / "runs.csv", _isoflop_points(noise=0.01))
    assert main(["fit", str(table), "--bootstrap", "50", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["se"]) >= {"E", "A", "B", "alpha", "beta", "a", "b"} and set(out["ci"]) == set(out["se"])
    assert all(lo <= out[k] <= hi for k, (lo, hi) in out["ci"].items() if k in ("alpha", "beta", "a"))
    (tmp_path / "fit.json").write_text(json.dumps(out))
    assert main(["plan", "--flops", "1e21", "--fit", str(tmp_path / "fit.json"), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["N_opt"] == pytest.approx(out["G"] * (1e21 / 6) ** out["a"], rel=1e-6)


def test_approach2_recovers_a(tmp_path, capsys):
    table = _table(tmp_path / "runs.csv", _isoflop_points())
    assert main(["fit", str(table), "--approach", "2", "--json", "--plot", str(tmp_path / "iso.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["a"] == pytest.approx(LAW.a, abs=0.01) and len(out["profiles"]) == 5


def test_approach1_from_run_directories(tmp_path, capsys):
    for n in np.geomspace(1e7, 1e9, 12):  # approach 1 resolves N only as finely as the grid of sizes
        run = tmp_path / f"n{n:011.0f}"
        run.mkdir()
        tokens = np.geomspace(1e8, 3e11, 60)
        lines = [json.dumps({"kind": "train", "step": i + 1, "tokens": float(t), "flops": float(6 * n * t),
                             "elapsed_s": float(i + 1), "loss": float(LAW.loss(n, t))}) for i, t in enumerate(tokens)]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        RunDir(run).write_record(RunRecord(
            N_total=round(n), N_active=round(n), N_non_embedding=round(n), N_embedding=0,
            D_tokens=round(tokens[-1]), D_bytes=round(tokens[-1]), flops=float(6 * n * tokens[-1]),
            flops_per_token=round(6 * n), steps=60, seq_len=1024, val_loss=float(LAW.loss(n, tokens[-1])),
            val_bpb=1.0, wall_time_s=60.0, training_time_s=60.0, world_size=1, device="cpu",
            tokenizer="byte", vocab_size=257, torch="2.13.0"))
    assert main(["fit", *map(str, sorted(tmp_path.iterdir())), "--approach", "1", "--json",
                 "--plot", str(tmp_path.parent / "env.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["a"] == pytest.approx(LAW.a, abs=0.01)


@pytest.mark.parametrize("args,named", [
    (["--bootstrap", "1"], "--bootstrap"),
    (["--budgets", "1e21,x"], "--budgets"),
    (["--drop-highest", "-1"], "--drop-highest"),
])
def test_bad_options_exit_2(tmp_path, capsys, args, named):
    table = _table(tmp_path / "runs.csv", _isoflop_points())
    assert main(["fit", str(table), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_bad_data_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D,L\n1e8,2e9,3.1\n-5,2e9,3.0\n")
    assert main(["fit", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0]
    few = _table(tmp_path / "few.csv", _isoflop_points()[:3])
    assert main(["fit", str(few)]) == 2
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2


def test_example_chinchilla_is_epochs_fit_and_feeds_plan(tmp_path, capsys):
    # the shipped Epoch AI transcription, with their 5 highest-loss runs dropped by default
    assert main(["fit", "--example", "chinchilla", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["success"] and out["n_points"] == 240 and out["law"] == "chinchilla"
    assert out["E"] == pytest.approx(1.8172, abs=0.001) and out["a"] == pytest.approx(0.514, abs=0.002)
    assert main(["fit", "--example", "chinchilla", "--drop-highest", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_points"] == 245
    assert main(["fit", "--example", "chinchilla"]) == 0
    assert "240 points: converged" in capsys.readouterr().out


def test_every_approach_writes_the_common_keys(tmp_path, capsys):
    table = _table(tmp_path / "runs.csv", _isoflop_points(noise=0.005))
    for approach in ("2", "3"):
        assert main(["fit", str(table), "--approach", approach, "--bootstrap", "20", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        for key in ("approach", "law", "a", "b", "k_N", "k_D", "success", "message", "n_points", "intervals"):
            assert key in out, (approach, key)
        assert out["intervals"]["level"] == 0.8 and set(out["intervals"]["ci"]) >= {"a", "b"}
    assert out["approach"] == 3 and out["ci"] == out["intervals"]["ci"]


@pytest.mark.parametrize("args,named", [
    (["--example", "chinchilla", "DATA.csv"], "--example"),
    (["--example", "chinchilla", "--approach", "1"], "--example"),
    ([], "DATA"),
    (["--example", "chinchilla", "--bootstrap", "5", "--level", "1.2"], "--level"),
])
def test_bad_example_use_exits_2(capsys, args, named):
    assert main(["fit", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_plan_refuses_a_fit_without_a_law(tmp_path, capsys):
    table = _table(tmp_path / "runs.csv", _isoflop_points())
    assert main(["fit", str(table), "--approach", "2", "--json"]) == 0
    (tmp_path / "fit.json").write_text(capsys.readouterr().out)
    assert main(["plan", "--flops", "1e21", "--fit", str(tmp_path / "fit.json")]) == 2
    assert "fits no loss law" in capsys.readouterr().err
