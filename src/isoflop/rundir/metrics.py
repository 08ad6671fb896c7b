"""metrics.jsonl: a run's log, one JSON object per line, appended as the run goes.

Records
    {"kind": "train", "step": ..., "loss", "lr", "grad_norm", "tokens", "flops", "tokens_per_s", "elapsed_s",
     "flops_per_s"[, "mfu"][, "aux_loss", routing stats][, "extra_loss"]}   every log.every steps and the last
    {"kind": "eval", "step": ..., "val_loss", "val_bpb", "val_tokens", "val_bytes"
     [, "val_loss_causal", "val_bpb_causal"][, "val_loss@<corpus>", "val_bpb@<corpus>"]}  every eval.every and the end

`step` counts completed optimizer steps; `elapsed_s` is training seconds (evaluations and checkpoints left out).
Each line is flushed as written, so a kill loses at most the line being written, which readers skip. On resume
the trainer truncates the records past the checkpoint it resumes from, so a resumed run's log reads as one run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import isoflop.rundir.atomic as atomic
from isoflop.errors import ConfigError

TRAIN = "train"
EVAL = "eval"
KINDS = (TRAIN, EVAL)


class MetricsLog:
    """The metrics.jsonl of one run."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, kind: str, record: dict[str, Any]) -> None:
        """Add one record of `kind` (TRAIN or EVAL); `record` holds at least its `step`."""
        if kind not in KINDS:
            raise ValueError(f"metrics record kind {kind!r} is not one of {KINDS}")
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, **record}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every readable record in file order (a line cut by a kill is skipped); [] when there is no log."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def numbered_records(self) -> list[tuple[str, dict[str, Any]]]:
        """("FILE line N", record) for every record, strictly: a line that is not a JSON object raises
        ConfigError naming it, unless it is the last line (the one a kill may cut)."""
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        out = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{self.path} line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if lineno == len(lines):
                    continue
                raise ConfigError(where, "not valid JSON") from None
            if not isinstance(record, dict):
                raise ConfigError(where, f"expected a JSON object, found {type(record).__name__}")
            out.append((where, record))
        return out

    def train_records(self) -> list[dict[str, Any]]:
        """The training records, in step order."""
        return [r for r in self.read() if r.get("kind") == TRAIN]

    def eval_records(self) -> list[dict[str, Any]]:
        """The evaluation records in step order, one per step (the last written wins)."""
        by_step: dict[int, dict[str, Any]] = {}
        for record in self.read():
            if record.get("kind") == EVAL:
                by_step[record["step"]] = record
        return [by_step[s] for s in sorted(by_step)]

    def truncate_after(self, step: int) -> None:
        """Drop the records past `step` (a resumed run's log continues from its checkpoint), atomically."""
        if not self.path.is_file():
            return
        self._write([r for r in self.read() if r.get("step", 0) <= step])

    def replace_with(self, source: MetricsLog, through_step: int) -> None:
        """This log becomes `source`'s records up to `through_step`, atomically (a run that continues another
        run's trajectory from that step carries its history, so its log reads as one run)."""
        self._write([r for r in source.read() if r.get("step", 0) <= through_step])

    def _write(self, records: list[dict[str, Any]]) -> None:
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
