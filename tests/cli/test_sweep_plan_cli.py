"""`isoflop sweep plan`: the table, --json, the folder it writes (idempotent, refusing another spec), and exit 2
with one line naming the key for each impossible grid (in-process through `isoflop.cli.main`)."""

from __future__ import annotations

import json

import pytest

from isoflop.cli import main
from isoflop.sweep.layout import SweepDir

SMALLEST = 'base = "tiny"\nbudgets = [3e12, 1e13]\nsizes = 3\nmode = "grid"\n'


def run(capsys, *args):
    try:
        code = main(["sweep", "plan", *map(str, args)])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SMALLEST + "# my first sweep\n")
    return path


def test_dry_plan_prints_every_run_and_both_bills(capsys, spec_file, tmp_path):
    code, out, err = run(capsys, spec_file)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["key", "role", "C", "N"]
    runs = [line for line in lines if line.startswith("C")]
    assert len(runs) == 6 and all(" grid " in line for line in runs)
    assert "FLOP bills  grid" in out and "fork/grid" in out
    assert list(tmp_path.iterdir()) == [spec_file]  # nothing written


def test_json_is_one_object_with_the_plan(capsys, spec_file):
    code, out, err = run(capsys, spec_file, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "grid" and len(data["runs"]) == 6 and data["written"] is False
    assert data["fork_share"] == pytest.approx(data["bills"]["fork"] / data["bills"]["grid"])
    assert {"key", "role", "budget", "steps", "flops", "flops_6nd", "config", "est_time_s"} <= set(data["runs"][0])


def test_out_writes_the_folder_once(capsys, spec_file, tmp_path):
    out_dir = tmp_path / "s1"
    code, out, err = run(capsys, spec_file, "--out", out_dir)
    assert code == 0, err
    assert f"wrote {out_dir}" in out
    sweep = SweepDir(out_dir)
    assert sweep.read_spec_text() == spec_file.read_text()  # the text as written, comment included
    plan = sweep.read_plan()
    assert len(plan.runs) == 6
    stamp = sweep.plan_file.stat().st_mtime_ns
    code, out, err = run(capsys, spec_file, "--out", out_dir, "--json")
    assert code == 0, err
    assert json.loads(out)["written"] is False and sweep.plan_file.stat().st_mtime_ns == stamp
    assert sweep.read_plan() == plan


def test_an_empty_folder_is_fine(capsys, spec_file, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, spec_file, "--out", tmp_path / "empty")
    assert code == 0, err
    assert SweepDir(tmp_path / "empty").is_sweep()


def test_a_folder_of_another_spec_is_refused(capsys, spec_file, tmp_path):
    out_dir = tmp_path / "s1"
    assert run(capsys, spec_file, "--out", out_dir)[0] == 0
    other = tmp_path / "other.toml"
    other.write_text(SMALLEST.replace('"grid"', '"fork"'))
    code, out, err = run(capsys, other, "--out", out_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out_dir) in err and "another spec" in err
    assert SweepDir(out_dir).read_spec_text() == spec_file.read_text()


def test_a_folder_with_other_things_is_refused(capsys, spec_file, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, _, err = run(capsys, spec_file, "--out", busy)
    assert code == 2 and str(busy) in err and sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("extra, key", [
    ("colour = 1", "colour"),
    ("[shape]\nhead_dim = 0", "shape.head_dim"),
])
def test_bad_spec_keys_exit_2_naming_the_key(capsys, tmp_path, extra, key):
    path = tmp_path / "sweep.toml"
    path.write_text(SMALLEST + extra + "\n")
    code, out, err = run(capsys, path)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"error: {key}:" in err


@pytest.mark.parametrize("spec, key", [
    ('base = "tiny"\nbudgets = [3e12]\nsizes = [1e3]\n', "sizes"),     # no shape that small
    ('base = "tiny"\nbudgets = [1e6]\nsizes = [3e5]\n', "budgets"),    # less than one step
])
def test_impossible_grids_exit_2_naming_the_key(capsys, tmp_path, spec, key):
    path = tmp_path / "sweep.toml"
    path.write_text(spec)
    code, _, err = run(capsys, path, "--out", tmp_path / "s")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"error: {key}:" in err
    assert not (tmp_path / "s").exists()


def test_a_garbage_spec_names_the_file(capsys, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text("budgets = [")
    code, _, err = run(capsys, path)
    assert code == 2 and str(path) in err and len(err.strip().splitlines()) == 1
