"""The run directory's state files: the training lock (held across processes, dropped on SIGKILL), the
failure record, the init record, a finished record set aside, and which config keys a resume may change."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop.config import ConfigError
from isoflop.rundir import RunDir, find_runs
from isoflop.rundir.lock import FileLock

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_2586d9e"
SRC = Path(__file__).resolve().parents[2] / "src"

HOLDER = """
import sys
from isoflop.rundir import RunDir
lock = RunDir(sys.argv[1]).acquire_lock()
print("held", flush=True)
sys.stdin.read()
"""


def _hold_in_child(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_is_exclusive_across_processes_and_dropped_by_sigkill(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_locked()  # no lock file at all
    proc = _hold_in_child(run.path)
    try:
        assert run.is_locked() and run.lock_file.is_file()
        with pytest.raises(ConfigError, match=rf"another process is training this run \(pid {proc.pid}\)") as e:
            run.acquire_lock()
        assert e.value.key == str(run.path)
        assert run.is_locked()  # the refused attempt did not disturb the holder
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not run.is_locked()  # the kernel dropped it with the process
    lock = run.acquire_lock()
    assert run.is_locked() and FileLock(run.lock_file).holder() == os.getpid()
    lock.release()
    assert not run.is_locked() and run.lock_file.is_file()  # released, never deleted


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
    first = FileLock(tmp_path / "x.lock")
    assert first.acquire() and first.held
    assert not FileLock(tmp_path / "x.lock").acquire()
    first.release()
    assert FileLock(tmp_path / "x.lock").acquire()


def test_the_lock_file_alone_does_not_make_a_run_nor_a_used_folder(tmp_path):
    run = RunDir(tmp_path / "run")
    run.acquire_lock().release()
    assert not run.is_run() and find_runs(tmp_path, complete=False) == []
    run.check_start({"a": 1}, resume=False)  # a fresh start is still allowed here
    (run.path / "other").write_text("x")
    with pytest.raises(ConfigError, match="not an empty directory"):
        run.check_start({"a": 1}, resume=False)
    with pytest.raises(ConfigError, match="not a directory"):
        RunDir(run.path / "other").acquire_lock()


def test_failure_record_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_failure() is None
    run.write_failure("NonFiniteLoss: loss became nan at step 7", 7)
    failure = run.read_failure()
    assert failure["reason"].startswith("NonFiniteLoss") and failure["step"] == 7 and failure["time"].endswith("Z")
    run.write_failure("RuntimeError: boom", None)
    assert run.read_failure()["step"] is None
    run.clear_failure()
    assert run.read_failure() is None
    run.clear_failure()  # nothing to clear: fine


def test_init_record_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_init() is None
    run.write_init({"run": "/x", "step": 4, "optimizer": True, "data": False})
    assert json.loads(run.init_file.read_text())["step"] == 4 and run.read_init()["run"] == "/x"


def test_a_finished_record_set_aside_leaves_a_stopped_run(tmp_path):
    run = RunDir(shutil.copytree(FIXTURE, tmp_path / "run"))
    written = run.record_file.read_bytes()
    moved = run.set_record_aside()
    assert moved.name == "run.step_0000004.json" and run.earlier_records() == [moved]
    assert run.is_run() and not run.is_complete()
    assert moved.read_bytes() == written  # moved as it was, not rewritten
    assert find_runs(tmp_path) == []  # no longer fitted as complete


def test_check_start_may_allow_one_subtree_to_differ(tmp_path):
    run = RunDir(shutil.copytree(FIXTURE, tmp_path / "run"))
    config = run.read_config()
    assert run.check_start(config, resume=True, may_differ=("train.horizon",)) is False
    longer = json.loads(json.dumps(config))
    longer["train"]["horizon"] = {"steps": 8}
    assert run.check_start(longer, resume=True, may_differ=("train.horizon",)) is True
    with pytest.raises(ConfigError, match=r"at train.horizon"):
        run.check_start(longer, resume=True)
    longer["train"]["seed"] = 3
    with pytest.raises(ConfigError, match=r"different config \(at train.seed\)"):
        run.check_start(longer, resume=True, may_differ=("train.horizon",))
    assert run.read_config() == config  # checks never write
