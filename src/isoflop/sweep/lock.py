"""The sweep lock: one active `sweep run` per sweep folder, so no run is trained twice at once.

An exclusive `fcntl.flock` on SWEEP/sweep.lock (layout.py names it), taken without waiting, through
rundir.lock.FileLock (the run lock's own mechanism). The kernel drops the lock when its holder exits,
however it exits (SIGKILL included), so a killed driver never leaves a stale lock, and the file is never
deleted. It holds the holder's pid, which the refusal of a second driver names. The descriptor is
close-on-exec, so the runs a driver starts do not inherit it: a run that outlives its driver cannot keep
the sweep locked. flock works between processes of one machine; on NFS, Linux emulates it with POSIX
byte-range locks, which hold across clients where the server supports them (NFSv4 does).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from isoflop.errors import ConfigError
from isoflop.rundir.lock import FileLock


class SweepLock:
    """`with SweepLock(path):` holds the lock, or raises ConfigError naming the holder's pid."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = FileLock(self.path)

    def __enter__(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._lock.acquire():
            pid = self._lock.holder()
            raise ConfigError(str(self.path.parent), f"another `isoflop sweep run` is active here (pid "
                              f"{pid if pid else '?'}); wait for it, or stop it first")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()


def driver_pid(path: str | Path) -> int | None:
    """The pid of the active `sweep run` holding the lock at `path`, or None when none holds it (0: held, pid
    unknown)."""
    lock = FileLock(path)
    return (lock.holder() or 0) if lock.is_held() else None
