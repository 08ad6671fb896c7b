"""The local executor: K runs at once with the cores divided, done runs skipped, failures recorded and held
back until --retry-failed, forks started once their trunk's checkpoint is there, corrupt folders left alone."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from isoflop.errors import ConfigError
from isoflop.sweep.local import _Driver, cores, run_local, select_runs
from isoflop.sweep.plan import InitPoint
from tests.sweep.hand_plans import make_sweep, tiny_run


def _max_concurrent(lines: list[str]) -> int:
    running = peak = 0
    for line in lines:
        if line.startswith("start "):
            running += 1
            peak = max(peak, running)
        elif line.startswith(("done ", "FAIL ", "stop ")):
            running -= 1
    return peak


def test_k_runs_at_once_with_the_cores_divided_then_all_skipped(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run(k, corpus_dir, steps=8) for k in ("a", "b", "c")])
    lines: list[str] = []
    summary = run_local(sweep, jobs=2, say=lines.append)
    assert sorted(summary.trained) == ["a", "b", "c"] and summary.exit_code() == 0, lines
    assert _max_concurrent(lines) == 2
    threads = max(1, cores() // 2)
    for key in "abc":
        log = sweep.log_file(key).read_text()  # the run's output, in the sweep's logs/, not in its run dir
        assert f"{key}: {threads} threads" in log and f"{key}: val loss" in log
        assert not (sweep.run_dir(key).path / "log").exists()
    again: list[str] = []
    summary = run_local(sweep, jobs=2, say=again.append)
    assert summary.done_before == ["a", "b", "c"] and not summary.trained
    assert not [line for line in again if line.startswith("start ")]


def test_failures_are_recorded_and_held_back_until_retried(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("bad", corpus_dir, extra=("optim.lr=1e30",)),
                                        tiny_run("killed", corpus_dir, steps=100000, extra=("checkpoint.every=1000000",))])
    lines: list[str] = []
    result = {}
    driver = threading.Thread(target=lambda: result.setdefault("summary", run_local(sweep, jobs=2, say=lines.append)))
    driver.start()
    deadline = time.monotonic() + 60
    pid = None
    while pid is None and time.monotonic() < deadline:
        started = [m for line in list(lines) if (m := re.match(r"start killed: .*\(pid (\d+)\)", line))]
        records = sweep.run_dir("killed").metrics.train_records() if started else []
        pid = int(started[0].group(1)) if started and records else None
        time.sleep(0.1)
    assert pid is not None, lines
    os.kill(pid, signal.SIGKILL)
    driver.join(60)
    summary = result["summary"]
    assert summary.failed["killed"] == "killed by SIGKILL"
    assert summary.failed["bad"].startswith("NonFiniteLoss")
    assert summary.exit_code() == 1
    failure = sweep.run_dir("killed").read_failure()
    assert failure["reason"] == "killed by SIGKILL" and failure["step"] >= 1
    # held back: nothing starts without --retry-failed
    again: list[str] = []
    summary = run_local(sweep, say=again.append)
    assert set(summary.failed_before) == {"bad", "killed"} and summary.exit_code() == 1
    assert not [line for line in again if line.startswith("start ")]
    summary = run_local(sweep, retry_failed=True, only=["bad"], say=again.append)
    assert summary.failed["bad"].startswith("NonFiniteLoss")  # diverges again, recorded again


def test_a_fork_waits_for_its_trunk_checkpoint(tmp_path, corpus_dir, cache_dir):
    trunk = tiny_run("T", corpus_dir, steps=24, role="trunk", extra=("checkpoint.at=[8]",))
    fork = tiny_run("f", corpus_dir, steps=12, role="fork", init_from=InitPoint(key="T", step=8))
    sweep = make_sweep(tmp_path / "s", [fork, trunk], mode="fork")
    lines: list[str] = []
    summary = run_local(sweep, jobs=2, only=["f"], say=lines.append)  # its trunk is not selected: blocked
    assert "waits for checkpoint 8 of T" in summary.blocked["f"] and summary.exit_code() == 1
    assert not sweep.run_dir("f").path.exists()
    lines.clear()
    summary = run_local(sweep, jobs=2, say=lines.append)
    assert sorted(summary.trained) == ["T", "f"], lines
    starts = [line.split(":")[0] for line in lines if line.startswith("start ")]
    assert starts == ["start T", "start f"]  # the trunk first, even though the plan lists the fork first
    assert sweep.run_dir("f").read_init()["step"] == 8


def test_corrupt_folders_are_reported_and_left_alone(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    run = sweep.run_dir("a")
    run.path.mkdir(parents=True)
    run.config_file.write_text("{broken")
    summary = run_local(sweep)
    assert "not valid JSON" in summary.corrupt["a"] and summary.exit_code() == 1
    assert run.config_file.read_text() == "{broken" and sorted(p.name for p in run.path.iterdir()) == ["config.json"]


def test_selection_and_the_child_environment(tmp_path, corpus_dir):
    trunk = tiny_run("T", corpus_dir, role="trunk")
    sweep = make_sweep(tmp_path / "s", [tiny_run("g", corpus_dir), trunk])
    plan = sweep.read_plan()
    assert [r.key for r in select_runs(plan, None)] == ["T", "g"]
    with pytest.raises(ConfigError, match="--only: no run 'x'"):
        select_runs(plan, ["g", "x"])
    with pytest.raises(ConfigError, match="--jobs"):
        run_local(sweep, jobs=0)
    driver = _Driver(sweep, jobs=cores() * 4, retry_failed=False, only=None, say=print, progress_every_s=1,
                     poll_s=0.1, python="python")
    env = driver._child_env()
    assert env["OMP_NUM_THREADS"] == "1" and driver.threads == 1  # never 0 threads
    import isoflop

    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(os.path.dirname(os.path.dirname(isoflop.__file__)))


def test_a_run_another_process_holds_is_waited_for(tmp_path, corpus_dir, cache_dir):
    """As after a driver was killed: its run is still checkpointing, holding the run lock."""
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir, steps=4)])
    lock = sweep.run_dir("a").acquire_lock()
    lines: list[str] = []
    result = {}
    driver = threading.Thread(target=lambda: result.setdefault("summary", run_local(sweep, say=lines.append,
                                                                                   poll_s=0.05)))
    driver.start()
    deadline = time.monotonic() + 30
    while not any(line.startswith("wait  a") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert any(line.startswith("wait  a") for line in lines) and not any(line.startswith("start") for line in lines)
    lock.release()
    driver.join(60)
    assert list(result["summary"].trained) == ["a"], lines
