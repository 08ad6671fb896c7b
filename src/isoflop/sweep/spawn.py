"""How the local executor starts a run's process: forked from a warm server (Linux, the default) or as a subprocess.

A run is `python -m isoflop sweep run-one SWEEP KEY ...`. A fresh interpreter spends seconds importing torch,
torch._dynamo (the first optimizer imports it) and isoflop before the run's first step: 2.9 s of a tiny run's
process beyond its wall_time_s on 2 busy cores, against 0.3 s forked. The fork server (`isoflop sweep
run-server`, one per `sweep run`) imports them once and forks one child per run, which is what the subprocess
would have been:

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
  dies and keeps SIGTERM's default action (it dies; it also exits when its stdin, the driver's pipe, closes),
  and each child asks for SIGTERM when the server dies, so a killed driver's runs get SIGTERM one hop later and
  checkpoint and stop, as subprocesses do.

ISOFLOP_SWEEP_SPAWN=subprocess starts plain subprocesses instead (the default where there is no fork or prctl:
not Linux). A server that does not start, is not one thread at a fork, or initialised CUDA is replaced by the
subprocess path for the rest of the sweep, with the reason in `Spawner.note`. A server that dies while runs are
in flight takes them down with SIGTERM (they checkpoint); their status is then unknown and reads as LOST_RC.
"""

from __future__ import annotations

import functools
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
@functools.cache
def _libc_prctl() -> Any:
    import ctypes

    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


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
    torch = sys.modules.get("torch")  # a CUDA context does not survive a fork: the children would have none
    cuda = bool(torch is not None and torch.cuda.is_initialized())
    _send(replies, {"ready": True, "pid": os.getpid(), "threads": _threads_after_fork(), "cuda": cuda})
    children: dict[int, int | None] = {}  # pid -> a pidfd, readable once it exited (None: no pidfd_open here)
    pending = b""
    while True:
        pidfds = [fd for fd in children.values() if fd is not None]
        # asleep until a request or an exit; a child without a pidfd is looked for every 0.1 s
        readable, _, _ = select.select([requests, *pidfds], [], [], 0.1 if None in children.values() else None)
        if requests in readable:
            data = os.read(requests, 1 << 16)
            if not data:
                return 0  # the driver is gone or done: the children that remain get SIGTERM (their PDEATHSIG)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = _fork(request, main, prctl, replies, (requests, replies, *pidfds))
                if pid is not None:
                    children[pid] = _pidfd(pid)
                    _send(replies, {"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if (fd := children.pop(pid, None)) is not None:
                os.close(fd)
            _send(replies, {"pid": pid, "rc": os.waitstatus_to_exitcode(status)})


def _fork(request: dict[str, Any], main: Callable[[list[str]], int | None], prctl: Any, replies: int,
          server_fds: tuple[int, ...]) -> int | None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    server = os.getpid()
    ready_r, ready_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(ready_r)
        os.close(ready_w)
        _send(replies, {"id": request["id"], "error": f"fork failed: {e}"})
        return None
    if pid == 0:
        os.close(ready_r)
        _child(request, main, prctl, server, server_fds, ready_w)
    os.close(ready_w)
    # told once the child leads its session and writes to its log (as Popen returns after the exec), so a
    # killpg(pid) right away reaches it; nothing read means it died first, and its status follows
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def _child(request: dict[str, Any], main: Callable[[list[str]], int | None], prctl: Any, server: int,
           server_fds: tuple[int, ...], ready: int) -> NoReturn:
    code = 1
    try:
        for fd in server_fds:  # the protocol's pipes: the driver must see them close when the server dies
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


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # Linux 5.3, Python 3.9
    except (AttributeError, OSError):
        return None


def _send(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())  # a few bytes: one write


def _threads_after_fork() -> int:
    """This process's threads once it forked a child: a thread pool with an atfork handler stops before a fork
    (OpenBLAS's, which numpy starts on import, does, and restarts in the child on its first use); a thread still
    there would be missing from every child, and any lock it held stay locked there."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return len(os.listdir("/proc/self/task"))


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
        self._ready: dict[str, Any] = {}
        self._next = 0
        self.dead = False
        """Whether the server's output ended (it exited; every status it gave was read)."""
        if not self._await(lambda: bool(self._ready), ready_timeout_s):
            why = f"exited: {self._last_error()}" if self.dead else "did not start in time"
            self.close()
            raise SpawnUnavailable(f"the fork server {why}")
        if self._ready["threads"] != 1:  # forking a threaded process may deadlock or break a thread pool
            self.close()
            raise SpawnUnavailable(f"the fork server keeps {self._ready['threads']} threads across a fork")
        if self._ready.get("cuda"):
            self.close()
            raise SpawnUnavailable("the fork server initialised CUDA, which its children cannot inherit")

    def start(self, argv: list[str], *, log: Path, env: dict[str, str], cwd: str | None = None) -> ForkedRun:
        """Fork a child running the server's `main(argv)`, its output appended to `log`; its handle. Raises
        SpawnUnavailable when the server is gone, OSError when its fork failed."""
        self._next += 1
        request = {"id": self._next, "argv": argv, "log": str(Path(log).absolute()), "env": env,
                   "cwd": cwd or os.getcwd()}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:  # BrokenPipeError: it exited
            why = f"the fork server is gone ({e}; {self._last_error()})"
            self.close()
            raise SpawnUnavailable(why) from None
        if not self._await(lambda: self._next in self._replies, REPLY_TIMEOUT_S):
            why = f"the fork server did not fork{f': {self._last_error()}' if self.dead else ' in time'}"
            self.close()
            raise SpawnUnavailable(why)
        reply = self._replies.pop(self._next)
        if "error" in reply:
            raise OSError(reply["error"])
        return ForkedRun(self, reply["pid"])

    def returncode(self, pid: int) -> int | None:
        """The status of child `pid` once it exited, else None (LOST_RC once it is gone with the server)."""
        self._pump(0.0)
        if pid in self._status:
            return self._status.pop(pid)
        return LOST_RC if self.dead and not _alive(pid) else None

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the server's stdin (it exits; children still running get SIGTERM), read what it still says, and
        wait for it (killed after `timeout_s`)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if not self._await(lambda: False, timeout_s) and not self.dead:
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
        assert self.proc.stdout is not None
        while not self.dead and select.select([self.proc.stdout], [], [], timeout_s)[0]:
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not data:  # it exited
                self.dead = True
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
        if self._err.closed:
            return "closed"
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
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            if self.server.dead:
                time.sleep(0.05)
            else:
                self.server._pump(0.05)
        return code


class Spawner:
    """Starts `COMMAND ARGV` processes (COMMAND: `python -m isoflop`) with `env`: forked from a ForkServer that
    `COMMAND SERVER_ARGV` runs (started for the first run, again if it died), or as subprocesses (the module
    docstring). `note` says why the fork path was given up, once it was."""

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
                    self.close()
                    self._server = ForkServer(self.command + self.server_argv, env=self.env)
                return self._server.start(argv, log=Path(log.name), env=self.env)
            except SpawnUnavailable as e:
                self.mode, self.note = "subprocess", f"{e}: runs start as subprocesses"
                self.close()
        return subprocess.Popen(self.command + argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True, preexec_fn=die_with_parent())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
