"""`isoflop report STUDY --out DIR [--smoke]`: every study end to end in seconds, a rerun skips finished runs,
an interrupted report resumes, and bad input exits 2 with one line. (The skip and resume checks use
cosine-stretch, the cheapest study; the verb's logic is the same for all.)"""

from __future__ import annotations

import json
import math

import pytest

from isoflop.cli import main

STUDIES = ("rope-extrapolation", "sign-optimizer-embeddings", "cosine-stretch", "compressed-text", "sparse-isoflop",
           "isoflop-sweep")


def test_list_names_every_study(capsys):
    assert main(["report", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(STUDIES)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each has a description


@pytest.mark.parametrize("args,named", [(["no-such-study"], "no-such-study"),
                                        (["cosine-stretch", "--set", "model.d_modle=3"], "model.d_modle"),
                                        (["cosine-stretch", "--set", "model.d_model=-1"], "d_model"),
                                        (["cosine-stretch", "--set", "nonsense"], "nonsense")])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, named):
    out = tmp_path / "out"
    assert main(["report", *args, "--out", str(out), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err
    assert not out.exists()


def test_missing_out_exits_2(capsys):
    assert main(["report", "cosine-stretch"]) == 2
    assert "--out" in capsys.readouterr().err


def _check_report(out, study):
    results = json.loads((out / "results.json").read_text())
    assert (out / f"{study}.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "report.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(results["rows"])
    keys = [c["key"] for c in results["columns"]]
    for row in results["rows"]:
        assert all(k in row for k in keys)
        assert all(math.isfinite(row[k]) for k in keys if isinstance(row[k], float))
    return results


@pytest.mark.parametrize("study", ["rope-extrapolation", "sign-optimizer-embeddings", "sparse-isoflop"])
def test_smoke_report_end_to_end(tmp_path, cache_dir, capsys, study):
    out = tmp_path / study
    assert main(["report", study, "--out", str(out), "--smoke"]) == 0
    err = capsys.readouterr().err
    results = _check_report(out, study)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert all((out / "runs" / r / "run.json").is_file() for r in runs)
    assert f"[{len(runs)}/{len(runs)}]" in err

    if study == "rope-extrapolation":
        from isoflop.studies.rope_extrapolation import _kinds, layout_runs

        kinds = list(_kinds(32)) + [k for _, evals in layout_runs(32).values() for k in evals]
        assert [r["kind"] for r in results["rows"]] == kinds
        assert [c["key"] for c in results["columns"]] == ["kind", "L32", "L64", "L128"]
        assert len(results["data"]["evaluations"]) == len(kinds) * 3
        assert all(math.isfinite(e["val_bpb"]) for e in results["data"]["evaluations"])
    elif study == "sparse-isoflop":
        dense = results["rows"][0]
        for row in results["rows"]:  # equal training FLOPs within one step; a step's time is the run's over steps
            assert abs(row["flops"] - dense["flops"]) <= row["flops"] / row["steps"]
            assert row["s_per_step"] == pytest.approx(row["wall_s"] / row["steps"])
        assert all(len(c["val_loss"]) >= 2 for c in results["data"]["curves"].values())
        routed = [r["val_loss_causal"] is not None and 0 <= r["predictor_accuracy"] <= 1 for r in results["rows"]]
        assert routed == [False, False, True, True]  # dense and MoE route no depth; MoD and MoDE sample causally
        assert sum("causal predictor" in f for f in results["findings"]) == 2
    elif study == "sign-optimizer-embeddings":
        assert results["data"]["rare_count_train"] == 1
        for row in results["rows"]:  # the table's final value is the last point of the traced curve
            assert row["rare_max"] == results["data"]["traces"][row["run"]][-1]["max_abs"]


def test_cosine_stretch_end_to_end_then_skips_and_resumes(tmp_path, cache_dir, capsys):
    out = tmp_path / "cs"
    assert main(["report", "cosine-stretch", "--out", str(out), "--smoke"]) == 0
    first = _check_report(out, "cosine-stretch")
    assert [r["stretch"] for r in first["rows"]] == [1.0, 1.25, 1.5, 2.0, 5.0]
    for row in first["rows"]:  # the final lr against the closed form floor + (1 - floor)(1 + cos(pi / s)) / 2
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / row["stretch"]))
        assert row["final_lr_fraction"] == pytest.approx(expected, rel=1e-9)
        record = json.loads((out / "runs" / f"stretch_{row['stretch']:g}" / "run.json").read_text())
        assert row["val_loss"] == record["val_loss"]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    stamps = {r: (out / "runs" / r / "run.json").stat().st_mtime_ns for r in runs}
    capsys.readouterr()
    assert main(["report", "cosine-stretch", "--out", str(out), "--smoke"]) == 0  # everything finished: skipped
    err = capsys.readouterr().err
    assert err.count("finished, skipped") == len(runs) == 5 and "training into" not in err
    assert stamps == {r: (out / "runs" / r / "run.json").stat().st_mtime_ns for r in runs}
    (out / "runs" / "stretch_2" / "run.json").unlink()  # as if killed after its last checkpoint
    assert main(["report", "cosine-stretch", "--out", str(out), "--smoke"]) == 0
    err = capsys.readouterr().err
    assert "stretch_2: resuming" in err and err.count("finished, skipped") == 4
    assert json.loads((out / "results.json").read_text())["rows"] == first["rows"]
    # the same DIR with other settings is refused before any work
    assert main(["report", "cosine-stretch", "--out", str(out), "--smoke", "--set", "train.seed=1"]) == 2
    assert "different config" in capsys.readouterr().err
