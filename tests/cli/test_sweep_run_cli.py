"""`isoflop sweep run`, `sweep run-one` and `sweep status` as a user calls them: exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shutil

from isoflop.sweep.lock import SweepLock
from tests.sweep.hand_plans import make_sweep, run_cli, tiny_run


def test_run_one_exit_codes(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir, steps=4), tiny_run("b", corpus_dir, steps=4)])
    done = run_cli(cache_dir, "sweep", "run-one", str(sweep.path), "a", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("a: val loss ") and sweep.run_dir("a").is_complete()
    unknown = run_cli(cache_dir, "sweep", "run-one", str(sweep.path), "nope")
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "isoflop sweep: error: nope: no such run in this sweep's plan"]
    sweep.run_dir("b").write_failure("killed by SIGKILL", 2)
    failed = run_cli(cache_dir, "sweep", "run-one", str(sweep.path), "b")
    assert failed.returncode == 1 and "failed before at step 2: killed by SIGKILL" in failed.stderr
    assert not sweep.run_dir("b").is_run()


def test_a_second_driver_refuses_naming_the_first(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    with SweepLock(sweep.lock_file):
        second = run_cli(cache_dir, "sweep", "run", str(sweep.path))
    assert second.returncode == 2, second.stdout + second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert f"another `isoflop sweep run` is active here (pid {os.getpid()})" in line
    assert not sweep.run_dir("a").path.exists()


def test_bad_options_are_one_line_exit_2(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    for args, problem in ((["--only", "zz"], "--only: no run 'zz' in the plan"),
                          (["--jobs", "0"], "--jobs: must be at least 1"),
                          (["--no-wait"], "--no-wait: only with --executor slurm")):
        result = run_cli(cache_dir, "sweep", "run", str(sweep.path), *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert problem in result.stderr
    not_a_sweep = run_cli(cache_dir, "sweep", "status", str(tmp_path))
    assert not_a_sweep.returncode == 2 and "not a sweep folder" in not_a_sweep.stderr


def test_slurm_executor_without_slurm_says_why(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else: no sbatch, srun, scontrol
    bin_dir.mkdir()
    os.symlink(shutil.which("python") or "/usr/bin/python3", bin_dir / "python")
    from tests.sweep.hand_plans import child_env

    env = child_env(cache_dir) | {"PATH": str(bin_dir)}
    import subprocess

    result = subprocess.run([str(bin_dir / "python"), "-m", "isoflop", "sweep", "run", str(sweep.path), "--executor",
                             "slurm"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--executor slurm: no Slurm client here" in result.stderr, result.stderr


def test_status_json_counts(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir), tiny_run("b", corpus_dir)])
    sweep.run_dir("b").write_failure("NonFiniteLoss: loss became nan at step 3", 3)
    result = run_cli(cache_dir, "sweep", "status", str(sweep.path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(r["key"], r["state"]) for r in data["runs"]] == [("a", "pending"), ("b", "failed")]
    assert data["counts"]["pending"] == 1 and data["counts"]["failed"] == 1 and data["driver"] is None
    text = run_cli(cache_dir, "sweep", "status", str(sweep.path))
    assert text.stdout.strip().splitlines()[-1] == "1 pending, 1 failed  (2 runs)"
