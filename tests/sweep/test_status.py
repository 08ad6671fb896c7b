"""sweep_status reads every state from the folder: done, running (run lock held), stopped, pending, failed,
and corrupt folders, which are listed and never read as results."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from isoflop.sweep.lock import SweepLock
from isoflop.sweep.run_one import run_planned
from isoflop.sweep.status import format_status, last_train_record, sweep_status
from tests.sweep.hand_plans import make_sweep, tiny_run

KEYS = ("done", "stopped", "pending", "failed", "running", "bad_record", "bad_config", "other_config", "not_a_run")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_dir):
    """One finished run folder (trained once per module), copied into each test's sweep."""
    folder = tmp_path_factory.mktemp("trained")
    os.environ["ISOFLOP_CACHE"] = str(folder / "cache")
    try:
        sweep = make_sweep(folder / "s", [tiny_run("x", corpus_dir)])
        with open(os.devnull, "w") as devnull:
            run_planned(sweep, "x", stream=devnull)
    finally:
        del os.environ["ISOFLOP_CACHE"]
    return sweep.run_dir("x").path


def test_every_state_from_the_folder(tmp_path, corpus_dir, trained):
    sweep = make_sweep(tmp_path / "s", [tiny_run(k, corpus_dir) for k in KEYS])
    for key in ("done", "stopped", "failed", "running", "bad_record", "bad_config", "other_config"):
        shutil.copytree(trained, sweep.run_dir(key).path)
    for key in ("stopped", "failed", "running"):
        run = sweep.run_dir(key)
        run.record_file.unlink()
        shutil.rmtree(run.step_dir(12))
    sweep.run_dir("failed").write_failure("NonFiniteLoss: loss became nan at step 9", 9)
    lock = sweep.run_dir("running").acquire_lock()  # as a trainer holds it
    sweep.run_dir("bad_record").record_file.write_text('{"val_loss": ')  # a half-written record
    sweep.run_dir("bad_config").config_file.write_text("not json")
    other = sweep.run_dir("other_config")
    config = json.loads(other.config_file.read_text())
    config["train"]["seed"] = 7
    other.config_file.write_text(json.dumps(config))
    sweep.run_dir("not_a_run").path.mkdir(parents=True)
    (sweep.run_dir("not_a_run").path / "notes.txt").write_text("mine")
    (sweep.runs_dir / "stray").mkdir()
    try:
        status = sweep_status(sweep)
    finally:
        lock.release()
    by_key = {r.key: r for r in status.runs}
    assert {k: r.state for k, r in by_key.items()} == {
        "done": "done", "stopped": "stopped", "pending": "pending", "failed": "failed", "running": "running",
        "bad_record": "corrupt", "bad_config": "corrupt", "other_config": "corrupt", "not_a_run": "corrupt"}
    record = json.loads((trained / "run.json").read_text())
    assert by_key["done"].val_loss == record["val_loss"] and by_key["done"].step == 12
    assert by_key["stopped"].step == 12 and by_key["stopped"].loss is not None  # the metrics log ran to 12
    assert by_key["failed"].reason.startswith("NonFiniteLoss") and by_key["failed"].step == 9
    assert "not valid JSON" in by_key["bad_record"].reason
    assert "not valid JSON" in by_key["bad_config"].reason
    assert "train.seed" in by_key["other_config"].reason
    assert status.counts() == {"done": 1, "running": 1, "queued": 0, "stopped": 1, "pending": 1, "failed": 1,
                               "corrupt": 4}
    assert status.unplanned == ["stray"] and status.driver is None
    text = format_status(status)
    assert "1 done, 1 running, 1 stopped, 1 pending, 1 failed, 4 corrupt  (9 runs)" in text
    assert "not in the plan (left alone): stray" in text
    assert (sweep.run_dir("not_a_run").path / "notes.txt").read_text() == "mine"  # listed, not touched


def test_the_driver_holding_the_sweep_is_named(tmp_path, corpus_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    with SweepLock(sweep.lock_file):
        status = sweep_status(sweep)
        assert status.driver == os.getpid()
        assert f"pid {os.getpid()}" in format_status(status)
    assert sweep_status(sweep).driver is None


def test_last_train_record_reads_the_end_of_a_long_log(tmp_path):
    from isoflop.rundir import RunDir

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    lines = [json.dumps({"kind": "train", "step": s, "loss": 1.0 / s}) for s in range(1, 5001)]
    lines.append(json.dumps({"kind": "eval", "step": 5000, "val_loss": 0.5}))
    run.metrics.path.write_text("\n".join(lines) + '\n{"kind": "train", "st')  # a line cut by a kill
    assert last_train_record(run) == {"kind": "train", "step": 5000, "loss": 1.0 / 5000}
    assert last_train_record(RunDir(tmp_path / "none")) is None


def test_job_states_without_slurm_say_why_and_the_folder_decides(tmp_path, corpus_dir, monkeypatch):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    sweep.add_job("a", "123")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, srun, scontrol here
    status = sweep_status(sweep)
    assert status.scheduler.startswith("no Slurm client here")
    (run,) = status.runs
    assert (run.state, run.job, run.job_state) == ("pending", "123", None)
    assert "slurm: no Slurm client here" in format_status(status)


def test_job_states_from_sacct_then_scontrol(tmp_path, monkeypatch):
    """sacct answers for the jobs accounting knows; scontrol for the rest (a cluster without slurmdbd)."""
    from isoflop.sweep.slurm import query_states

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sacct": "printf '12|COMPLETED\\n13|CANCELLED by 0\\n'",
               "scontrol": "printf 'JobId=13 JobName=x JobState=PENDING\\nJobId=14 JobName=y JobState=RUNNING Reason=None\\n'",
               "sbatch": "exit 0", "srun": "exit 0"}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    states, source = query_states(["12", "13", "14", "15"])
    assert states == {"12": "COMPLETED", "13": "CANCELLED", "14": "RUNNING"} and source == "sacct+scontrol"
