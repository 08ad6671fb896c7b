"""What a run shows as it goes: a live console line and, optionally, TensorBoard events (the metrics log itself
is the run directory's, rundir/metrics.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO


class ConsoleProgress:
    """step, loss, tokens/s and ETA on one line: rewritten in place on a terminal, one line per log otherwise."""

    def __init__(self, total_steps: int, stream: TextIO | None = None):
        self.total = total_steps
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def step(self, record: dict[str, Any]) -> None:
        step = record["step"]
        tokens_per_step = record["tokens"] / step
        eta = (self.total - step) * tokens_per_step / max(record["tokens_per_s"], 1e-9)
        line = (f"step {step:>{len(str(self.total))}}/{self.total} | loss {record['loss']:.4f} | "
                f"lr {record['lr']:.2e} | {record['tokens_per_s'] / 1e3:7.1f}k tok/s | ETA {_clock(eta)}")
        self._emit(line)

    def message(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def _emit(self, line: str) -> None:
        self.stream.write(("\r\033[K" + line) if self.live else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


class TensorBoard:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("log.tensorboard needs tensorboard: pip install 'isoflop[tb]'") from e
        self.writer = SummaryWriter(str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
