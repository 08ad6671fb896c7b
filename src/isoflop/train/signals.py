"""Preemption: a stop signal becomes a request the trainer honours at the next step boundary.

Slurm sends SIGTERM when it preempts or cancels a job (and SIGUSR1 ahead of the time limit when asked with
`--signal=USR1@SECONDS`); torchrun forwards SIGTERM to its workers. While `StopSignals` is entered, those
signals only set a flag (the handler does nothing else: no I/O inside a signal handler); the trainer checks it
between steps, checkpoints that step and raises `step.Preempted`, so the job can be requeued and resumed
bit-exactly. The previous handlers are restored on exit. Python delivers signals to the main thread only, so
in any other thread this installs nothing (and a signal keeps its previous meaning).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """`with StopSignals() as stop:` ... `stop.signum` is the first stop signal received, or None."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
