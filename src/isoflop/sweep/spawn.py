"""How the local executor starts a run's process: forked from a warm server (Linux, the default) or as a subprocess.

A run is `python -m isoflop sweep run-one SWEEP KEY ...`. A fresh interpreter spends seconds importing torch and
isoflop before the run's first step (about 2.5 s on an idle core, twice that on a busy machine), a sizeable share
of a CPU sweep's short runs. The fork server (`isoflop sweep run-server`, one per `sweep run`) imports them
once and forks one child per run, which is what the subprocess would have been:

- a process of its own, leading its own session (`killpg(pid)` reaches it and its helpers), its pid told to the
  driver; the server reaps it and reports its status as subprocess.Popen.returncode reads (-N: killed by signal N);
- stdin /dev/null, stdout and stderr appended to the run's log, the run's environment and working directory;
- the same code path: the CLI's `main(argv)`, whose return value (or SystemExit) is the exit status, after the
  exit of an interpreter (non-daemon threads joined, atexit functions run);
- threads: the server never runs a torch op, so torch's OpenMP pool (GNU OpenMP's does not survive a fork)
  does not exist when it forks, and the server is one thread at a fork (checked when it starts: numpy's OpenBLAS
  pool stops itself before a fork and restarts in the child); `run-one --threads T` sets torch's threads in the
  child before its first op. The server has the runs' environment (libgomp and OpenBLAS read OMP_NUM_THREADS and
  OPENBLAS_NUM_THREADS once, when they load);
- it dies with the driver: the server asks the kernel (prctl PR_SET_PDEATHSIG) for SIGTERM when the driver
  dies and keeps SIGTERM's default action (it dies), and each child asks for SIGTERM when the server dies, so a
  killed driver's runs get SIGTERM one hop later and checkpoint and stop, as subprocesses do.

ISOFLOP_SWEEP_SPAWN=subprocess starts plain subprocesses instead (the default where there is no fork or prctl:
not Linux). A server that does not start, or is not one thread at a fork, is replaced by the subprocess
path for the rest of the sweep, with the reason in `Spawner.note`. A server that dies while runs are in flight
takes them down with SIGTERM (they checkpoint); their status is then unknown and reads as LOST_RC.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from isoflop.errors import ConfigError

SPAWN_ENV = "ISOFLOP_SWEEP_SPAWN"
MODES = ("fork", "subprocess")
READY_TIMEOUT_S = 300.0
"""How long the driver waits for a new server's imports (seconds; a busy machine makes them slow)."""
REPLY_TIMEOUT_S = 60.0
"""How long the driver waits for the server to fork a run and tell its pid."""
LOST_RC = 3
"""The status of a run whose server died under it: the server's death sent it SIGTERM, so it stopped (with a
checkpoint once training) like a preempted run (EXIT_PREEMPTED), and the next `sweep run` resumes it."""
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class SpawnUnavailable(Exception):
    """The fork server cannot be used (did not start, died, is not one thread): use the subprocess path."""


def spawn_mode(env: dict[str, str] | None = None) -> str:
    """"fork" or "subprocess", from ISOFLOP_SWEEP_SPAWN (default: fork on Linux, subprocess elsewhere)."""
    value = (os.environ if env is None else env).get(SPAWN_ENV, "").strip().lower()
    if value and value not in MODES:
        raise ConfigError(SPAWN_ENV, f"must be one of {', '.join(MODES)}, got {value!r}")
    return value or ("fork" if _fork_here() else "subprocess")


def _fork_here() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


# ---------------------------------------------------------------------------------------------- parent death
_prctl: Any = None


def _libc_prctl() -> Any:
    global _prctl
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return _prctl


def _die_with(prctl: Any, parent: int) -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the prctl: nobody is left to signal us
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when this process's calling thread dies (Linux; None
    elsewhere). prctl is looked up here, in the parent, so the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl, parent = _libc_prctl(), os.getpid()
    return lambda: _die_with(prctl, parent)


# ---------------------------------------------------------------------------------------------- the server
def serve(main: Callable[[list[str]], int | None], preload: Sequence[str] = (),
          warm: Callable[[], Any] | None = None) -> int:
    """The fork server's loop (`isoflop sweep run-server`): import `preload` and call `warm`, neither of which may
    run a torch op, say ready, then fork a child running `main(argv)` per request on stdin, reporting each pid
    and, once reaped, each status on stdout (one JSON object a line). Ends when stdin closes."""
    requests, replies = os.dup(0), os.dup(1)  # the protocol's pipes, kept private:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # a stray print of an import goes to stderr, not into the protocol
    os.close(null)
    prctl = _libc_prctl()
    for name in preload:
        importlib.import_module(name)
    if warm is not None:
        warm()
    _send(replies, {"ready": True, "pid": os.getpid(), "threads": _threads_after_fork()})
    children: set[int] = set()
    pending = b""
    while True:
        readable, _, _ = select.select([requests], [], [], 0.1)  # 0.1 s: how late a status is reported at most
        if readable:
            data = os.read(requests, 1 << 16)
            if not data:
                return 0  # the driver is gone or done: the children that remain get SIGTERM (their PDEATHSIG)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = _fork(request, main, prctl, (requests, replies))
                if pid is not None:
                    children.add(pid)
                    _send(replies, {"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            _send(replies, {"pid": pid, "rc": os.waitstatus_to_exitcode(status)})


def _fork(request: dict[str, Any], main: Callable[[list[str]], int | None], prctl: Any,
          protocol: tuple[int, int]) -> int | None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    server = os.getpid()
    ready_r, ready_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(ready_r)
        os.close(ready_w)
        _send(protocol[1], {"id": request["id"], "error": f"fork failed: {e}"})
        return None
    if pid == 0:
        os.close(ready_r)
        _child(request, main, prctl, server, (*protocol, ready_w))
    os.close(ready_w)
    # told once the child leads its session and writes to its log (as Popen returns after the exec), so a
    # killpg(pid) right away reaches it; nothing read means it died first, and its status follows
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def _child(request: dict[str, Any], main: Callable[[list[str]], int | None], prctl: Any, server: int,
           fds: tuple[int, int, int]) -> NoReturn:
    code = 1
    try:
        requests, replies, ready = fds
        for fd in (requests, replies):  # the driver must see the pipes close when the server dies
            os.close(fd)
        os.setsid()
        _die_with(prctl, server)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.argv[0], *request["argv"]]
        os.write(ready, b".")
        os.close(ready)
        code = _exit_code(main, request["argv"])
    except BaseException:  # noqa: BLE001 - as an interpreter would: the traceback, exit 1
        traceback.print_exc()
    finally:
        os._exit(_interpreter_exit(code))


def _exit_code(main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    try:
        code: Any = main(argv)
    except SystemExit as e:
        code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _interpreter_exit(code: int) -> int:
    """What Python does on exit (non-daemon threads joined, atexit functions run, streams flushed); the code."""
    import atexit

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _send(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())  # under PIPE_BUF: one write, never interleaved


def _threads_after_fork() -> int:
    """This process's threads once it forked a child: a thread pool with an atfork handler stops before a fork
    (OpenBLAS's, which numpy starts on import, does, and restarts in the child on its first use); a thread still
    there would be missing from every child, and any lock it held stay locked there."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------------------- the driver's side
class ForkServer:
    """A running fork server (`cmd` runs `serve`), started with `env` and waited for until ready."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=env,
                                     start_new_session=True, preexec_fn=die_with_parent())
        self._pending = b""
        self._replies: dict[int, dict[str, Any]] = {}
        self._status: dict[int, int] = {}
        self._ready: dict[str, Any] | None = None
        self._next = 0
        self.dead = False
        if not self._await(lambda: self._ready is not None, ready_timeout_s):
            why = "did not start in time" if not self.dead else f"exited: {self._last_error()}"
            self.close()
            raise SpawnUnavailable(f"the fork server {why}")
        assert self._ready is not None
        if self._ready["threads"] != 1:  # forking a threaded process may deadlock or break a thread pool
            self.close()
            raise SpawnUnavailable(f"the fork server keeps {self._ready['threads']} threads across a fork")

    def start(self, argv: list[str], *, log: Path, env: dict[str, str], cwd: str | None = None) -> ForkedRun:
        """Fork a child running the server's `main(argv)`, its output appended to `log`; its handle."""
        self._next += 1
        request = {"id": self._next, "argv": argv, "log": str(Path(log).absolute()), "env": env,
                   "cwd": cwd or os.getcwd()}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self.dead = True
            raise SpawnUnavailable(f"the fork server is gone ({e})") from None
        if not self._await(lambda: self._next in self._replies, REPLY_TIMEOUT_S):
            raise SpawnUnavailable("the fork server did not fork" + (f": {self._last_error()}" if self.dead else ""))
        reply = self._replies.pop(self._next)
        if "error" in reply:
            raise OSError(reply["error"])
        return ForkedRun(self, reply["pid"])

    def returncode(self, pid: int) -> int | None:
        """The status of child `pid` once it exited, else None (LOST_RC once it is gone with the server)."""
        self._pump(0.0)
        if pid in self._status:
            return self._status.pop(pid)
        if self.dead and not _alive(pid):
            return LOST_RC
        return None

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the server's stdin (it exits; children still running get SIGTERM) and wait for it."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dead = True
        for stream in (self.proc.stdout, self._err):
            if stream is not None:
                stream.close()

    def _await(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.dead or time.monotonic() > deadline:
                return False
            self._pump(min(0.5, max(0.0, deadline - time.monotonic())))
        return True

    def _pump(self, timeout_s: float) -> None:
        """Read what the server said within `timeout_s`: its ready line, fork replies and children's statuses."""
        if self.dead or self.proc.stdout is None or self.proc.stdout.closed:
            return
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], timeout_s)[0]:
            data = os.read(fd, 1 << 16)
            if not data:  # the server exited (or is exiting)
                self.dead = True
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                return
            self._pending += data
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                message = json.loads(line)
                if "ready" in message:
                    self._ready = message
                elif "rc" in message:
                    self._status[message["pid"]] = message["rc"]
                else:
                    self._replies[message["id"]] = message
            timeout_s = 0.0

    def _last_error(self) -> str:
        self._err.seek(0)
        lines = [line.strip() for line in self._err.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.proc.returncode}"


class ForkedRun:
    """A child of a ForkServer, read like a subprocess.Popen: pid, poll(), wait(), returncode."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.returncode(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            if self.server.dead:
                time.sleep(0.05)
            else:
                self.server._pump(0.05)
        return self.returncode  # type: ignore[return-value]


class Spawner:
    """Starts `COMMAND ARGV` processes (COMMAND is `python -m isoflop`) with `env`, forked from a ForkServer run by
    `COMMAND SERVER_ARGV` (started at the first run, again if it died) or as subprocesses (see the module
    docstring). `note` says why the fork path was given up, once set."""

    def __init__(self, command: list[str], server_argv: list[str], env: dict[str, str], *,
                 mode: str | None = None):
        self.command, self.server_argv, self.env = command, server_argv, env
        self.mode = mode or spawn_mode()
        self.note: str | None = None
        self._server: ForkServer | None = None
        if self.mode == "fork" and not _fork_here():
            self.mode, self.note = "subprocess", "no fork server here (it needs Linux): runs start as subprocesses"

    def start(self, argv: list[str], log: IO[bytes]) -> subprocess.Popen | ForkedRun:
        """Start `COMMAND ARGV`, stdout and stderr appended to `log` (a file open for appending)."""
        if self.mode == "fork":
            try:
                if self._server is None or self._server.dead:
                    self._server = ForkServer(self.command + self.server_argv, env=self.env)
                return self._server.start(argv, log=Path(log.name), env=self.env)
            except SpawnUnavailable as e:
                self.mode, self.note = "subprocess", f"{e}: runs start as subprocesses"
                self.close()
        return subprocess.Popen(self.command + argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True, preexec_fn=die_with_parent())

    def close(self) -> None:
        if self._server is not None and not self._server.dead:
            self._server.close()
