"""Training time as opposed to wall time: evaluations and checkpoints pause the training clock.

Throughput (`tokens_per_s`), `elapsed_s` in the metrics log, the seconds a checkpoint keeps and the record's
`training_time_s` all count steps only, so a run that evaluates more often does not look slower; `wall_time_s`
counts everything. Both carry over a resume (a checkpoint keeps both).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


class TrainingClock:
    """Seconds of training and of wall time, each continuing the figures a resumed run had reached."""

    def __init__(self, training_s: float = 0.0, wall_s: float = 0.0, *,
                 now: Callable[[], float] = time.perf_counter):
        self._now = now
        self._start = now()
        self._training_before, self._wall_before = training_s, wall_s
        self._paused_s = 0.0
        self._pause_began: float | None = None  # while paused, training time stands still

    @property
    def training_s(self) -> float:
        now = self._now() if self._pause_began is None else self._pause_began
        return self._training_before + now - self._start - self._paused_s

    @property
    def wall_s(self) -> float:
        return self._wall_before + self._now() - self._start

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count as training (nested pauses count once)."""
        if self._pause_began is not None:
            yield
            return
        self._pause_began = self._now()
        try:
            yield
        finally:
            self._paused_s += self._now() - self._pause_began
            self._pause_began = None
