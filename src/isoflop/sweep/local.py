"""The local executor: `isoflop sweep run SWEEP --jobs K` trains the runs not done yet on this machine.

The driver holds the sweep lock (lock.py) for its whole life and starts each run as its own process,
`python -m isoflop sweep run-one SWEEP KEY`, at most K at once, each with max(1, cores // K) threads
(OMP_NUM_THREADS and torch's intra-op threads), its output appended to SWEEP/logs/<key>.log. On Linux the
process is forked from a server that imported torch and isoflop once (spawn.py: the same command in a fresh
process, without its seconds of imports); ISOFLOP_SWEEP_SPAWN=subprocess starts plain subprocesses.

- Complete runs are skipped, started ones resume, corrupt folders are reported and left alone.
- A fork starts once its trunk's checkpoint at the fork step is there (the trunk may still be training);
  trunks go first so that forks are unblocked early. A fork whose trunk failed, or is not selected and not
  done, is reported blocked.
- A run that exits 1, or dies by a signal with no record, gets a failure file with its reason (the trainer's
  own, else the last line of its output or the signal) and is not started again until `--retry-failed`.
  A run that exits 2 (bad input) is reported with its reason. A run stopped by SIGTERM checkpoints and
  exits 3 (preempted): reported stopped, resumed by the next `sweep run`.
- Children die with the driver: on Linux each child asks the kernel (prctl PR_SET_PDEATHSIG) for SIGTERM
  when the driver's thread that started it exits (a forked run: when its server does, which dies with that
  thread), however the driver dies (SIGKILL included), so it checkpoints and stops; the lock the driver held
  is dropped by the kernel. Elsewhere a child may outlive a killed driver; its run lock still keeps a new
  driver from training the same run twice. The children run in their own process groups, so a Ctrl-C
  reaches the driver only, which stops them with SIGTERM (each checkpoints) and waits for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from isoflop.errors import ConfigError
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.lock import SweepLock
from isoflop.sweep.plan import PlannedRun, SweepPlan
from isoflop.sweep.run_one import Prepared, prepare, read_failure, trunk_checkpoint_ready
from isoflop.sweep.spawn import ForkedRun, Spawner
from isoflop.sweep.status import last_train_record

EXIT_PREEMPTED = 3
"""The exit code of a run stopped with a checkpoint (cli.EXIT_PREEMPTED; the library does not import cli)."""
STOP_GRACE_S = 300.0
"""How long a stopping driver waits for its runs to checkpoint after SIGTERM before it kills them."""


@dataclass(kw_only=True)
class SweepSummary:
    """What one `sweep run` did, run by run."""

    done_before: list[str] = field(default_factory=list)
    trained: dict[str, dict[str, Any]] = field(default_factory=dict)
    """key -> val_loss, steps, time_s of the runs this call finished."""
    failed: dict[str, str] = field(default_factory=dict)
    """key -> reason, for the runs that failed in this call."""
    failed_before: dict[str, str] = field(default_factory=dict)
    """key -> reason, for runs left alone because they failed before (no --retry-failed)."""
    corrupt: dict[str, str] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    """Runs stopped with a checkpoint (preempted, or the driver was stopped): the next `sweep run` resumes them."""
    blocked: dict[str, str] = field(default_factory=dict)
    elsewhere: dict[str, str] = field(default_factory=dict)
    """Runs another executor has (a Slurm job still queued or running)."""
    submitted: dict[str, str] = field(default_factory=dict)
    """slurm: key -> the job id submitted by this call."""
    wall_s: float = 0.0

    def exit_code(self) -> int:
        if self.failed or self.failed_before or self.corrupt or self.blocked:
            return 1
        return EXIT_PREEMPTED if self.stopped else 0

    def lines(self) -> list[str]:
        out = [f"{len(self.done_before) + len(self.trained)} done ({len(self.trained)} trained now, "
               f"{len(self.done_before)} before) in {self.wall_s:.1f} s"]
        for title, table in (("failed", self.failed), ("failed before (--retry-failed reruns)", self.failed_before),
                             ("corrupt (left alone)", self.corrupt), ("blocked", self.blocked),
                             ("elsewhere", self.elsewhere)):
            out += [f"{title}: {key}: {reason}" for key, reason in table.items()]
        if self.stopped:
            out.append(f"stopped with a checkpoint (the next `sweep run` resumes): {', '.join(self.stopped)}")
        return out


@dataclass
class _Child:
    key: str
    proc: subprocess.Popen | ForkedRun
    log: IO[bytes]
    log_start: int
    started: float


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def not_done(sweep: SweepDir, plan: SweepPlan, selected: list[PlannedRun], summary: SweepSummary,
             say: Callable[[str], None]) -> Iterator[tuple[PlannedRun, Prepared]]:
    """The selected runs still to train, each with its preparation (both executors start from these); a done run
    is entered in `summary.done_before`, a corrupt one (its folder does not read as the plan's run) in
    `summary.corrupt`, and left alone."""
    for planned in selected:
        try:
            prep = prepare(sweep, planned.key, plan)
        except ConfigError as e:
            summary.corrupt[planned.key] = str(e)
            say(f"corrupt {planned.key}: {e}")
            continue
        if prep.action == "done":
            summary.done_before.append(planned.key)
            continue
        yield planned, prep


def select_runs(plan: SweepPlan, only: list[str] | None) -> list[PlannedRun]:
    """The runs to consider, trunks first (they unblock forks), then plan order; `only` restricts them."""
    if only:
        known = set(plan.keys())
        unknown = [k for k in only if k not in known]
        if unknown:
            raise ConfigError("--only", f"no run {unknown[0]!r} in the plan")
    runs = [r for r in plan.runs if not only or r.key in only]
    return sorted(runs, key=lambda r: r.role != "trunk")


def run_local(sweep: SweepDir, *, jobs: int = 1, retry_failed: bool = False, only: list[str] | None = None,
              say: Callable[[str], None] = lambda _line: None, progress_every_s: float = 30.0,
              poll_s: float = 0.2, python: str = sys.executable) -> SweepSummary:
    """Train the sweep's runs that are not done (see the module docstring); what happened to each run."""
    if jobs < 1:
        raise ConfigError("--jobs", f"must be at least 1, got {jobs}")
    sweep.require_sweep()
    with SweepLock(sweep.lock_file):
        return _Driver(sweep, jobs=jobs, retry_failed=retry_failed, only=only, say=say,
                       progress_every_s=progress_every_s, poll_s=poll_s, python=python).run()


class _Driver:
    def __init__(self, sweep: SweepDir, *, jobs: int, retry_failed: bool, only: list[str] | None,
                 say: Callable[[str], None], progress_every_s: float, poll_s: float, python: str):
        self.sweep, self.jobs, self.retry_failed, self.say = sweep, jobs, retry_failed, say
        self.progress_every_s, self.poll_s, self.python = progress_every_s, poll_s, python
        self.plan = sweep.read_plan()
        self.selected = select_runs(self.plan, only)
        self.threads = max(1, cores() // jobs)
        self.summary = SweepSummary()
        self.todo: list[PlannedRun] = []
        self.running: dict[str, _Child] = {}
        self.stop_signal: int | None = None
        self.stopping = False
        self.waiting_said: set[str] = set()
        self.spawner = Spawner([python, "-m", "isoflop"], ["sweep", "run-server"], self._child_env())

    # ------------------------------------------------------------------ the loop
    def run(self) -> SweepSummary:
        start = time.perf_counter()
        self._sort_out()
        self.say(f"sweep {self.sweep.path}: {len(self.todo)} to train of {len(self.selected)} "
                 f"({len(self.summary.done_before)} done), {self.jobs} at once, {self.threads} threads each, "
                 + ("forked from a warm server" if self.spawner.mode == "fork" else "as subprocesses"))
        restore = self._trap_signals()
        try:
            last_progress = time.perf_counter()
            while (self.todo or self.running) and self.stop_signal is None:
                self._reap()
                self._launch_ready()
                if not self.running and self.todo and self._stuck():
                    self._block_rest()
                    break
                if time.perf_counter() - last_progress >= self.progress_every_s and self.running:
                    self._progress()
                    last_progress = time.perf_counter()
                time.sleep(self.poll_s)
            if self.stop_signal is not None:
                self.say(f"stopping on {signal.Signals(self.stop_signal).name}: asking the runs to checkpoint")
        finally:
            self._stop_all()
            self.spawner.close()
            restore()
        self.summary.wall_s = time.perf_counter() - start
        return self.summary

    def _sort_out(self) -> None:
        """Which selected runs are done, corrupt, failed before or elsewhere; the rest go to `todo`."""
        from isoflop.sweep.slurm import active_jobs

        elsewhere = active_jobs(self.sweep)
        for planned, prep in not_done(self.sweep, self.plan, self.selected, self.summary, self.say):
            key = planned.key
            if key in elsewhere:
                job, state = elsewhere[key]
                self.summary.elsewhere[key] = f"Slurm job {job} {state}"
                self.say(f"skip  {key}: it is Slurm job {job} ({state})")
                continue
            failure = read_failure(prep.run)
            if failure is not None and not self.retry_failed:
                at = f" at step {failure['step']}" if failure.get("step") is not None else ""
                self.summary.failed_before[key] = f"{failure.get('reason', '?')}{at}"
                continue
            self.todo.append(planned)

    def _ready(self, planned: PlannedRun) -> bool:
        run = self.sweep.run_dir(planned.key)
        if run.is_locked():  # still being trained by a process a killed driver left (it is checkpointing)
            if planned.key not in self.waiting_said:
                self.say(f"wait  {planned.key}: another process trains it; starting when it stops")
                self.waiting_said.add(planned.key)
            return False
        point = planned.init_from
        return point is None or bool(run.checkpoint_steps()) or trunk_checkpoint_ready(self.sweep, point)

    def _stuck(self) -> bool:
        """Nothing left can start: none is ready, and no process (a killed driver's run finishing its
        checkpoint) holds a waiting run or the trunk a waiting fork needs."""
        for planned in self.todo:
            if self._ready(planned) or self.sweep.run_dir(planned.key).is_locked():
                return False
            point = planned.init_from
            if point is not None and self.sweep.run_dir(point.key).is_locked():
                return False
        return True

    def _launch_ready(self) -> None:
        for planned in list(self.todo):
            if len(self.running) >= self.jobs or self.stop_signal is not None:
                return
            if self._ready(planned):
                self.todo.remove(planned)
                self._launch(planned)

    def _block_rest(self) -> None:
        for planned in self.todo:
            point = planned.init_from
            trunk = point.key if point is not None else "?"
            why = (f"its trunk {trunk} failed" if trunk in self.summary.failed or trunk in self.summary.failed_before
                   else f"its trunk {trunk} is corrupt" if trunk in self.summary.corrupt
                   else f"waits for checkpoint {point.step if point else '?'} of {trunk}, which is not being trained "
                   "(not selected, or stopped)")
            self.summary.blocked[planned.key] = why
            self.say(f"block {planned.key}: {why}")
        self.todo = []

    # ------------------------------------------------------------------ children
    def _launch(self, planned: PlannedRun) -> None:
        key, sweep = planned.key, self.sweep
        run = sweep.run_dir(key)
        how = (f"resume from step {run.checkpoint_steps()[-1]}" if run.checkpoint_steps() else
               "restart (no checkpoint yet)" if run.is_run() else
               f"fork of {planned.init_from.key} at step {planned.init_from.step}" if planned.init_from else "fresh")
        sweep.logs_dir.mkdir(parents=True, exist_ok=True)
        log = open(sweep.log_file(key), "ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep run-one {key} ({how}), driver pid "
                  f"{os.getpid()}\n".encode())
        log.flush()
        argv = ["sweep", "run-one", str(sweep.path), key, "--threads", str(self.threads)]
        if self.retry_failed:
            argv.append("--retry-failed")
        started, note = time.perf_counter(), self.spawner.note  # a new fork server's imports count to this run
        proc = self.spawner.start(argv, log)
        if self.spawner.note != note:
            self.say(f"note  {self.spawner.note}")
        self.running[key] = _Child(key, proc, log, log.tell(), started)
        self.say(f"start {key}: {planned.role}, {planned.steps} steps, {how} (pid {proc.pid})")

    def _child_env(self) -> dict[str, str]:
        import isoflop

        env = dict(os.environ)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        # the child imports the isoflop this driver runs, installed or not
        root = str(Path(isoflop.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        return env

    def _reap(self) -> None:
        for key, child in list(self.running.items()):
            rc = child.proc.poll()
            if rc is not None:
                del self.running[key]
                child.log.close()
                self._outcome(child, rc)

    def _outcome(self, child: _Child, rc: int) -> None:
        key, run = child.key, self.sweep.run_dir(child.key)
        seconds = time.perf_counter() - child.started
        if rc == 0 and run.is_complete():
            record = run.read_record()
            self.summary.trained[key] = {"val_loss": record.val_loss, "steps": record.steps,
                                         "time_s": record.wall_time_s}
            self.say(f"done  {key}: val_loss {record.val_loss:.4f}, {record.steps} steps, "
                     f"{record.wall_time_s:.1f} s training ({seconds:.1f} s here)")
            return
        if rc == EXIT_PREEMPTED or (self.stopping and rc in (-signal.SIGTERM, -signal.SIGKILL)):
            self.summary.stopped.append(key)
            self.say(f"stop  {key}: stopped{self._at(run)} (checkpoint {run.checkpoint_steps()[-1:] or 'none'}); "
                     "the next `sweep run` resumes it")
            return
        last = _last_line(self.sweep.log_file(key), child.log_start)
        if rc == 2:
            reason = f"bad input: {last}"
        elif rc < 0:
            reason = f"killed by {signal.Signals(-rc).name}"
        elif rc == 0:
            reason = "exited without writing its record"
        else:
            failure = read_failure(run)
            reason = failure["reason"] if failure else (last or f"exited with code {rc}")
        failure = read_failure(run)
        if rc != 2 and failure is None:
            record = last_train_record(run)
            run.write_failure(reason, record.get("step") if record else None)
        step = failure.get("step") if failure else None
        self.summary.failed[key] = reason
        self.say(f"FAIL  {key}: {reason}{self._at(run, step)} (log: {self.sweep.log_file(key)})")

    def _at(self, run: Any, step: int | None = None) -> str:
        if step is None:
            record = last_train_record(run)
            step = record["step"] if record else None
        return f" at step {step}" if step is not None else ""

    def _progress(self) -> None:
        for key, child in self.running.items():
            record = last_train_record(self.sweep.run_dir(key))
            planned = self.plan.run(key)
            if record:
                self.say(f"  ... {key}: step {record['step']}/{planned.steps}, loss {record['loss']:.4f}, "
                         f"{time.perf_counter() - child.started:.0f} s")
            else:
                self.say(f"  ... {key}: preparing ({time.perf_counter() - child.started:.0f} s)")

    def _stop_all(self) -> None:
        """SIGTERM every child still running (each checkpoints and exits), then wait; SIGKILL after the grace."""
        if not self.running:
            return
        self.stopping = True
        for child in self.running.values():
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.perf_counter() + STOP_GRACE_S
        while self.running and time.perf_counter() < deadline:
            self._reap()
            time.sleep(self.poll_s)
        for child in self.running.values():
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
        self._reap()

    def _trap_signals(self) -> Callable[[], None]:
        """SIGTERM, SIGINT and SIGHUP stop the driver gracefully; the old handlers come back after."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

        def stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signum

        old = {s: signal.signal(s, stop) for s in signals}
        return lambda: [signal.signal(s, h) for s, h in old.items()] and None


def _signal_group(proc: subprocess.Popen | ForkedRun, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)  # the child leads its own group: its helpers get it too
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(path: Path, start: int) -> str:
    """The last non-empty line of a log from byte `start` on (this attempt's output)."""
    try:
        with path.open("rb") as f:
            f.seek(max(start, f.seek(0, 2) - 8192))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""
