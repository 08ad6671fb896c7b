"""A sweep survives kills: the driver and single runs SIGKILLed at seeded random moments, `sweep run` again
until it is done; every run then completes exactly once with the record of an uninterrupted sweep, bit for bit.
SIGTERM to a run checkpoints the step it reached before it exits. A corrupt run folder is reported, never
trained over. Nothing the runs did not write is deleted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from isoflop.sweep.local import cores, select_runs
from isoflop.sweep.plan import InitPoint
from isoflop.sweep.run_one import run_planned
from isoflop.sweep.status import last_train_record, sweep_status
from tests.sweep.hand_plans import child_env, isoflop_cmd, make_sweep, record_values, run_cli, tiny_run

JOBS = 2
KILLS = [("driver", "start"), ("run", "train"), ("driver", "train"), ("run", "start"), ("driver", "train"),
         ("run", "train")]
"""What is SIGKILLed on each attempt, and when: in the start-up (imports, data, first steps: a seeded random
moment in the first seconds after the first run process, or for a driver the first process under it, its fork
server, appeared) or in training (after a seeded random number of further logged steps)."""
SEED = 14


EVERY = ("checkpoint.every=10", "eval.every=50", "log.every=2")


def _plan(corpus: Path) -> list:
    return [
        tiny_run("T", corpus, steps=120, role="trunk", extra=(*EVERY, "checkpoint.at=[50]")),
        tiny_run("f", corpus, steps=100, role="fork", extra=EVERY, init_from=InitPoint(key="T", step=50)),
        tiny_run("a", corpus, steps=120, extra=EVERY),
        tiny_run("b", corpus, steps=100, extra=(*EVERY, "optim.lr=0.02")),
    ]


def _progress(sweep) -> int:
    """Training steps logged so far, summed over the runs."""
    return sum((last_train_record(sweep.run_dir(k)) or {}).get("step", 0) for k in sweep.read_plan().keys())


def _reference_of(sweep) -> dict[str, dict]:
    """The uninterrupted sweep, in-process, with the threads each run gets under `--jobs JOBS`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cores() // JOBS))
    try:
        with open(os.devnull, "w") as devnull:
            for planned in select_runs(sweep.read_plan(), None):  # T before f
                run_planned(sweep, planned.key, stream=devnull)
    finally:
        torch.set_num_threads(threads)
    return {key: record_values(sweep, key) for key in sweep.read_plan().keys()}


def _descendants(pid: int) -> list[int]:
    """Every live process under `pid`: its runs (children, or a fork server's children) and the server."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        out += sorted(frontier)
    return out


def _runs(pid: int, sweep) -> list[int]:
    """The driver's run processes: those under it whose output goes to a log of the sweep (not its fork server)."""
    def log_of(p: int) -> str:
        try:
            return os.readlink(f"/proc/{p}/fd/1")
        except OSError:
            return ""

    return [p for p in _descendants(pid) if log_of(p).startswith(str(sweep.logs_dir.resolve()) + os.sep)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
def test_kills_at_random_moments_then_every_run_completes_once_bit_for_bit(tmp_path, corpus_dir, cache_dir):
    reference = _reference_of(make_sweep(tmp_path / "reference", _plan(corpus_dir), mode="fork"))
    sweep = make_sweep(tmp_path / "s", _plan(corpus_dir), mode="fork")
    mine = {sweep.path / "notes.md": b"my notes\n", sweep.runs_dir / "keep" / "data.bin": b"\x00\x01"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    rng = random.Random(SEED)
    env = child_env(cache_dir)
    orphans: list[int] = []  # runs of killed drivers: they must stop by themselves
    kills = {"driver": 0, "run": 0}
    for attempt in range(len(KILLS) + 4):
        log = open(tmp_path / f"driver{attempt}.out", "wb")
        driver = subprocess.Popen(isoflop_cmd("sweep", "run", str(sweep.path), "--jobs", str(JOBS), "--retry-failed"),
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        if attempt < len(KILLS):
            victim, phase = KILLS[attempt]
            deadline = time.monotonic() + 60
            while phase == "start" and time.monotonic() < deadline and driver.poll() is None and not (
                    _runs(driver.pid, sweep) if victim == "run" else _descendants(driver.pid)):
                time.sleep(0.02)
            deadline = time.monotonic() + (rng.uniform(0.3, 3.0) if phase == "start" else 120)
            target = _progress(sweep) + rng.randint(5, 60)
            while time.monotonic() < deadline and driver.poll() is None and _progress(sweep) < target:
                time.sleep(0.02)
            runs, everything = _runs(driver.pid, sweep), _descendants(driver.pid)
            if driver.poll() is None and (runs if victim == "run" else everything):
                if victim == "driver":
                    driver.kill()
                    orphans += everything  # its runs and its fork server
                else:
                    os.kill(rng.choice(runs), signal.SIGKILL)
                kills[victim] += 1
        driver.wait(timeout=180)
        log.close()
        if driver.returncode == 0:
            break
    else:
        pytest.fail(f"the sweep did not finish: {(tmp_path / f'driver{attempt}.out').read_text()}")
    assert kills["driver"] >= 2 and kills["run"] >= 2, kills  # the schedule really interrupted it
    assert _wait_gone(orphans, 30) == [], "the runs (or the fork server) of a killed driver did not stop"

    for key, values in reference.items():
        assert record_values(sweep, key) == values, key
        run = sweep.run_dir(key)
        steps = [r["step"] for r in run.metrics.train_records()]
        assert steps == list(range(2, values["steps"] + 1, 2)), key  # one run's log: each step once
        assert sweep.log_file(key).read_text().count(f"{key}: val loss") == 1, key  # completed exactly once
        assert run.read_failure() is None
    for path, data in mine.items():
        assert path.read_bytes() == data

    # a corrupt folder is reported, and a new `sweep run` neither trains over it nor touches it
    broken = sweep.run_dir("a")
    broken.record_file.write_text('{"val_loss": 2.')
    before = _tree(sweep.runs_dir)
    assert {r.key: r.state for r in sweep_status(sweep).runs}["a"] == "corrupt"
    result = run_cli(cache_dir, "sweep", "run", str(sweep.path), "--jobs", str(JOBS), timeout=300)
    assert result.returncode == 1 and "corrupt a:" in result.stdout, result.stdout + result.stderr
    assert _tree(sweep.runs_dir) == before


def test_sigterm_to_a_run_checkpoints_the_step_it_reached(tmp_path, corpus_dir, cache_dir):
    planned = tiny_run("long", corpus_dir, steps=120, extra=("checkpoint.every=100000", "eval.every=100000"))
    sweep = make_sweep(tmp_path / "s", [planned])
    # --jobs 2: one thread per run (cores // 2 here), as the reference below; on a loaded 2-core machine two
    # OpenMP threads per tiny run spin far more than they compute
    driver = subprocess.Popen(isoflop_cmd("sweep", "run", str(sweep.path), "--jobs", str(JOBS)), env=child_env(cache_dir),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = sweep.run_dir("long")
    deadline = time.monotonic() + 60
    while (last_train_record(run) or {}).get("step", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = _runs(driver.pid, sweep)
    os.kill(child, signal.SIGTERM)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 3 and "stop  long: stopped at step" in out, out
    assert not run.is_complete() and run.read_failure() is None
    (step,) = run.checkpoint_steps()  # checkpoint.every is past the horizon: this one is the signal's
    assert 3 <= step < 120 and last_train_record(run)["step"] == step
    result = run_cli(cache_dir, "sweep", "run", str(sweep.path), "--jobs", str(JOBS), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = record_values(sweep, "long")
    reference = make_sweep(tmp_path / "ref", [planned])
    assert resumed == _reference_of(reference)["long"]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat") or os.uname().sysname != "Linux",
                    reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("spawn", ["fork", "subprocess"])
def test_runs_stop_with_a_checkpoint_when_their_driver_is_killed(tmp_path, corpus_dir, cache_dir, spawn):
    sweep = make_sweep(tmp_path / "s", [tiny_run("endless", corpus_dir, steps=1_000_000,
                                                 extra=("checkpoint.every=10000000", "eval.every=10000000"))])
    driver = subprocess.Popen(isoflop_cmd("sweep", "run", str(sweep.path), "--jobs", str(JOBS)),
                              env=child_env(cache_dir) | {"ISOFLOP_SWEEP_SPAWN": spawn}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    run = sweep.run_dir("endless")
    deadline = time.monotonic() + 60
    while (last_train_record(run) or {}).get("step", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runs, everything = _runs(driver.pid, sweep), _descendants(driver.pid)
    assert len(runs) == 1 and len(everything) == (2 if spawn == "fork" else 1), (runs, everything)
    driver.kill()
    driver.wait()
    left = _wait_gone(everything, 20)
    for pid in left:  # do not leave an endless run behind when this fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the run (or its fork server) outlived its driver"
    (step,) = run.checkpoint_steps()  # the SIGTERM the kernel sent it on the driver's death: checkpointed
    assert step >= 2 and not run.is_locked() and run.read_failure() is None


def test_sigterm_to_the_driver_stops_its_runs_with_checkpoints(tmp_path, corpus_dir, cache_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run(k, corpus_dir, steps=1_000_000, extra=(
        "checkpoint.every=10000000", "eval.every=10000000")) for k in ("x", "y")])
    driver = subprocess.Popen(isoflop_cmd("sweep", "run", str(sweep.path), "--jobs", str(JOBS)),
                              env=child_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while min(_progress_of(sweep, k) for k in ("x", "y")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 3, out
    (stopped,) = [line for line in out.splitlines() if line.startswith("stopped with a checkpoint")]
    assert "stopping on SIGTERM" in out and sorted(stopped.split(": ")[1].split(", ")) == ["x", "y"]
    for key in ("x", "y"):
        run = sweep.run_dir(key)
        assert len(run.checkpoint_steps()) == 1 and run.read_failure() is None and not run.is_locked()


def _progress_of(sweep, key: str) -> int:
    return (last_train_record(sweep.run_dir(key)) or {}).get("step", 0)
