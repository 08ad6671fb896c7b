"""An exclusive, non-blocking lock on a file (`fcntl.flock`), held by one process while it works on a folder.

The kernel drops a flock when the last descriptor of its open file is closed, so a holder that dies, even by
SIGKILL, releases it: a lock file left behind is harmless and never needs cleaning up. The file is never
deleted either, since deleting a lock file races a process that has opened it but not yet locked it (both
would then believe they hold it). It holds the holder's pid as text, for the message of the one refused.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

#: `is_held` probes with a shared lock for an instant; an acquirer that meets that probe retries this many
#: times, this many seconds apart, before it reports the lock as held.
_TRIES, _PAUSE_S = 5, 0.02


class FileLock:
    """`acquire()` -> True (held until `release()` or the process ends) or False (another holder)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r}, held={self._fd is not None})"

    def acquire(self) -> bool:
        """Take the lock without blocking (the folder must exist); False when another open file holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this lock is held already")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec (PEP 446): children do not hold it
        for attempt in range(_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _TRIES - 1:
                    os.close(fd)
                    return False
                time.sleep(_PAUSE_S)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Let go (closing the descriptor drops the flock); a lock not held is left alone."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    @property
    def held(self) -> bool:
        """This object holds the lock."""
        return self._fd is not None

    def holder(self) -> int | None:
        """The pid the last holder wrote, or None (no file, or not a pid)."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def is_held(self) -> bool:
        """Some open file (of any process, this one included) holds the lock now; never blocks."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # drops the probe's shared lock, if it got one
        return False
