"""The sweep lock: one active `sweep run` per sweep folder, so no run is trained twice at once.

An exclusive `fcntl.flock` on SWEEP/sweep.lock (layout.py names it), taken without waiting. The kernel drops
the lock when its holder exits, however it exits (SIGKILL included), so a killed driver never leaves a stale
lock behind and the file is never deleted. The holder writes its pid, host and start time into the file, so
the refusal of a second driver names it. flock works between processes of one machine; on NFS, Linux emulates
it with POSIX byte-range locks, which hold across clients when the server supports them (NFSv4 does).

The lock file is opened close-on-exec (Python's default), so the runs a driver starts do not inherit it: a
run that outlives its driver cannot keep the sweep locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from isoflop.errors import ConfigError


class SweepLock:
    """`with SweepLock(path):` holds the lock or raises ConfigError naming the holder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(str(self.path.parent), f"another `isoflop sweep run` is active here ({describe(holder_of(self.path))}); "
                              "wait for it, or stop it first") from None
        # we hold the lock: nobody else writes the file now
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def is_held(path: str | Path) -> bool:
    """Whether some process holds the lock now. On Linux read from /proc/locks, which takes no lock, so a
    `sweep status` never makes a starting `sweep run` refuse; elsewhere by taking a shared lock for an instant."""
    path = Path(path)
    if not path.is_file():
        return False
    held = _in_proc_locks(path)
    if held is not None:
        return held
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _in_proc_locks(path: Path) -> bool | None:
    """Whether /proc/locks lists a flock on `path`'s inode (None where there is no /proc/locks)."""
    try:
        table = Path("/proc/locks").read_text()
        st = path.stat()
    except OSError:
        return None
    # lines read "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF" (major:minor in hex, then the inode)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == want for f in (line.split() for line in table.splitlines()))


def holder_of(path: str | Path) -> dict[str, Any] | None:
    """What the holder wrote (pid, host, since), or None when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"
