"""The fork server: a forked run is the process `python -m isoflop sweep run-one` would have been (its own pid
and session, its output in its log, the torch threads it asks for, the same exit statuses), it dies with its
server, and the subprocess path takes over where the server cannot be used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isoflop.errors import ConfigError
from isoflop.sweep.spawn import LOST_RC, ForkServer, Spawner, SpawnUnavailable, spawn_mode
from tests.sweep.hand_plans import SRC, child_env, make_sweep, tiny_run

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's")

PROBE = """
import os, sys, time
import torch
from isoflop.sweep.spawn import serve

def probe(argv):
    if argv[0] == "threads":  # as run-one --threads does: set them after the fork, before the first torch op
        torch.set_num_threads(int(argv[1]))
        torch.randn(1 << 21).exp_()  # a parallel region: its pool starts here, in the child
        tasks = len(os.listdir("/proc/self/task"))
        print(f"torch {torch.get_num_threads()} tasks {tasks} leader {os.getsid(0) == os.getpid()} "
              f"env {os.environ.get('PROBE')} cwd {os.getcwd()} argv {sys.argv[1:]}")
        print("to stderr", file=sys.stderr)
        return 0
    if argv[0] == "exit":
        return int(argv[1])
    if argv[0] == "raise":
        raise ValueError("boom")
    time.sleep(120)

if sys.argv[1:2] == ["fresh"]:  # the reference: the same probe in a process of its own
    probe(sys.argv[2:])
else:
    raise SystemExit(serve(probe, preload=["torch"]))
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(SRC.parent)])
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"} | extra


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@linux
def test_a_forked_child_has_its_own_threads_log_session_and_exit_status(tmp_path):
    server = ForkServer([sys.executable, "-c", PROBE], env=_env())
    log = tmp_path / "logs" / "a.log"
    log.parent.mkdir()
    log.write_bytes(b"=== header\n")
    try:
        child = server.start(["threads", "3"], log=log, env=_env(PROBE="yes"), cwd=str(tmp_path))
        assert child.wait(60) == 0 and child.pid != server.proc.pid
        lines = log.read_text().splitlines()
        fresh = subprocess.run([sys.executable, "-c", PROBE, "fresh", "threads", "3"], env=_env(), capture_output=True,
                               text=True, timeout=120).stdout.split(" leader")[0]
        # OMP_NUM_THREADS=1 in the server: 3 threads in the child is the child's own setting, and it runs as many
        # OS threads after a parallel op as a process started with that setting
        assert fresh.startswith("torch 3 tasks ") and int(fresh.split()[-1]) > 1
        assert lines[0] == "=== header" and lines[1] == (
            f"{fresh} leader True env yes cwd {tmp_path} argv ['threads', '3']"), lines
        assert lines[2] == "to stderr"
        assert server.start(["exit", "2"], log=log, env=_env()).wait(30) == 2
        assert server.start(["raise"], log=log, env=_env()).wait(30) == 1
        assert log.read_text().splitlines()[-1] == "ValueError: boom"
        sleeper = server.start(["sleep"], log=log, env=_env())
        os.killpg(sleeper.pid, signal.SIGKILL)  # it leads its own group, as start_new_session makes a subprocess
        assert sleeper.wait(30) == -signal.SIGKILL
        orphan = server.start(["sleep"], log=log, env=_env())
        assert orphan.poll() is None
        server.proc.kill()  # the server dies: its children get SIGTERM (PR_SET_PDEATHSIG) and stop
        assert _gone(orphan.pid, 20), "a forked child outlived its server"
        assert orphan.wait(20) == LOST_RC
    finally:
        server.close()


@linux
def test_run_one_forked_from_the_cli_server_writes_its_log_and_record(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir, steps=4)])
    env = child_env(cache_dir) | {"OMP_NUM_THREADS": "1"}
    spawner = Spawner([sys.executable, "-m", "isoflop"], ["sweep", "run-server"], env, mode="fork")
    sweep.logs_dir.mkdir()
    try:
        with open(sweep.log_file("a"), "ab") as log:
            run = spawner.start(["sweep", "run-one", str(sweep.path), "a", "--threads", "2"], log)
            assert spawner.mode == "fork" and spawner.note is None and run.wait(120) == 0
            with open(sweep.log_file("nope"), "ab") as bad:
                assert spawner.start(["sweep", "run-one", str(sweep.path), "nope"], bad).wait(60) == 2
    finally:
        spawner.close()
    text = sweep.log_file("a").read_text()
    assert text.startswith("a: 2 threads\n") and "a: val loss" in text and sweep.run_dir("a").is_complete()
    assert sweep.log_file("nope").read_text().strip().splitlines() == [
        "isoflop sweep: error: nope: no such run in this sweep's plan"]


def test_the_subprocess_path_when_asked_or_when_the_server_cannot_serve(tmp_path):
    assert spawn_mode({"ISOFLOP_SWEEP_SPAWN": "subprocess"}) == "subprocess"
    assert spawn_mode({}) == ("fork" if sys.platform.startswith("linux") else "subprocess")
    with pytest.raises(ConfigError, match="ISOFLOP_SWEEP_SPAWN: must be one of fork, subprocess, got 'thread'"):
        spawn_mode({"ISOFLOP_SWEEP_SPAWN": "thread"})
    echo = [sys.executable, "-c", "import sys; print('argv', sys.argv[1:])"]
    log_path = tmp_path / "x.log"
    with open(log_path, "ab") as log:
        plain = Spawner(echo, ["never started"], _env(), mode="subprocess").start(["a", "b"], log)
        assert isinstance(plain, subprocess.Popen) and plain.wait(30) == 0
        if sys.platform.startswith("linux"):
            broken = Spawner([sys.executable], ["-c", "raise SystemExit('no server here')"], _env(), mode="fork")
            started = broken.start(["-c", "print('plain')"], log)
            assert isinstance(started, subprocess.Popen) and started.wait(30) == 0
            assert broken.mode == "subprocess" and "the fork server exited: no server here" in broken.note
    assert log_path.read_text().splitlines() == ["argv ['a', 'b']"] + (
        ["plain"] if sys.platform.startswith("linux") else [])


@linux
def test_a_server_with_a_thread_that_survives_fork_is_refused():
    threaded = ("import threading, time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); "
                "from isoflop.sweep.spawn import serve; serve(print)")
    with pytest.raises(SpawnUnavailable, match="keeps 2 threads across a fork"):
        ForkServer([sys.executable, "-c", threaded], env=_env())
