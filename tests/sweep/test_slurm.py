"""The Slurm executor against a real one-node Slurm (scripts/slurm_setup.sh starts one as root; CI runs it):
a tiny sweep through sbatch gives the records a local run gives, a diverging run is recorded failed, and a
job sent SIGUSR1 checkpoints, requeues itself and completes once. Skipped, with the reason, without Slurm."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import torch

from isoflop.sweep.layout import SweepDir
from isoflop.sweep.run_one import run_planned
from isoflop.sweep.status import last_train_record, sweep_status
from tests.sweep.hand_plans import child_env, make_sweep, record_values, tiny_run


def _why_no_cluster() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm here (sinfo not found); `sudo bash scripts/slurm_setup.sh` starts a one-node cluster"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed ({e})"
    if out.returncode != 0:
        return f"the Slurm cluster is not up: {out.stderr.strip() or 'sinfo failed'}"
    if not {"idle", "mixed", "allocated", "completing"} & set(out.stdout.split()):
        return f"no Slurm node is up (sinfo: {out.stdout.split()})"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'isoflop[slurm]')"
    return None


WHY = _why_no_cluster()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

SLURM = dict(time_min=10, cpus_per_task=1, signal_delay_s=30)


@pytest.fixture
def job_env(cache_dir, monkeypatch):
    """sbatch exports the submitting environment: this checkout's isoflop and the test's token cache."""
    monkeypatch.setenv("PYTHONPATH", child_env(cache_dir)["PYTHONPATH"])
    return cache_dir


def _reference(tmp_path, planned) -> dict:
    sweep = make_sweep(tmp_path / f"ref-{planned.key}", [planned])
    threads = torch.get_num_threads()
    torch.set_num_threads(SLURM["cpus_per_task"])  # the job's threads
    try:
        with open(os.devnull, "w") as devnull:
            run_planned(sweep, planned.key, stream=devnull)
    finally:
        torch.set_num_threads(threads)
    return record_values(sweep, planned.key)


def test_a_sweep_through_slurm(tmp_path, corpus_dir, job_env):
    from isoflop.sweep.slurm import SlurmOptions, run_slurm

    runs = [tiny_run("a", corpus_dir, steps=8), tiny_run("b", corpus_dir, steps=8, extra=("optim.lr=0.02",)),
            tiny_run("bad", corpus_dir, extra=("optim.lr=1e30",))]
    sweep = make_sweep(tmp_path / "s", runs)
    lines: list[str] = []
    summary = run_slurm(sweep, SlurmOptions(**SLURM), wait=True, say=lines.append, poll_s=1)
    assert sorted(summary.trained) == ["a", "b"], lines
    assert summary.failed["bad"].startswith("NonFiniteLoss") and summary.exit_code() == 1
    assert sweep.run_dir("bad").read_failure()["reason"].startswith("NonFiniteLoss")
    jobs = sweep.read_jobs()
    assert sorted(jobs) == ["a", "b", "bad"] and all(len(ids) == 1 for ids in jobs.values())
    for planned in runs[:2]:
        assert record_values(sweep, planned.key) == _reference(tmp_path, planned)
    status = {r.key: r for r in sweep_status(sweep).runs}
    assert status["a"].state == "done" and status["a"].job == jobs["a"][0]
    assert status["bad"].state == "failed"
    # submitting again: nothing to do (done), or held back (failed), and no new job
    again = run_slurm(sweep, SlurmOptions(**SLURM), wait=True, poll_s=1)
    assert sorted(again.done_before) == ["a", "b"] and list(again.failed_before) == ["bad"]
    assert sweep.read_jobs() == jobs


def test_a_signalled_job_checkpoints_requeues_and_completes_once(tmp_path, corpus_dir, job_env):
    from isoflop.sweep.slurm import SlurmOptions, run_slurm

    planned = tiny_run("p", corpus_dir, steps=300, extra=("checkpoint.every=100000", "eval.every=100000"))
    sweep = make_sweep(tmp_path / "s", [planned])
    summary = run_slurm(sweep, SlurmOptions(**SLURM), wait=False)
    job = summary.submitted["p"]
    run = sweep.run_dir("p")
    deadline = time.monotonic() + 120
    while (last_train_record(run) or {}).get("step", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not run.is_complete(), "the run finished before it could be signalled: make it longer"
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)  # as Slurm does before the limit
    # a second driver follows the job it finds queued instead of submitting another
    lines: list[str] = []
    followed = run_slurm(sweep, SlurmOptions(**SLURM), wait=True, say=lines.append, poll_s=1)
    assert list(followed.trained) == ["p"] and not followed.submitted, lines
    assert sweep.read_jobs() == {"p": [job]}  # requeued under the same id
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in show, show
    steps = run.checkpoint_steps()
    assert len(steps) == 2 and 3 <= steps[0] < 300 and steps[1] == 300  # the signal's checkpoint, the final one
    logged = [r["step"] for r in run.metrics.train_records()]
    assert logged == list(range(1, 301))  # resumed from the checkpoint: each step once
    err = (SweepDir(sweep.path).slurm_dir / job / f"{job}_0_log.err").read_text()
    assert f"SIGUSR1 received: checkpointed step {steps[0]}" in err and f"requeued job {job}" in err
    assert f"resumed from step_{steps[0]:07d}" in err  # both attempts' output, appended
    assert record_values(sweep, "p") == _reference(tmp_path, planned)
