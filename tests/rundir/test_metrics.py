"""The metrics log: append, read back (skipping a line a kill cut), truncate on resume."""

from __future__ import annotations

import pytest

from isoflop.config import ConfigError
from isoflop.rundir import EVAL, TRAIN, MetricsLog


def _log(tmp_path) -> MetricsLog:
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in (1, 2, 3, 4):
        log.append(TRAIN, {"step": step, "loss": 5.0 - step})
        if step % 2 == 0:
            log.append(EVAL, {"step": step, "val_loss": 6.0 - step})
    return log


def test_append_and_read(tmp_path):
    log = _log(tmp_path)
    assert [r["step"] for r in log.train_records()] == [1, 2, 3, 4]
    assert [(r["step"], r["val_loss"]) for r in log.eval_records()] == [(2, 4.0), (4, 2.0)]
    assert log.read()[0] == {"kind": TRAIN, "step": 1, "loss": 4.0}
    with pytest.raises(ValueError, match="kind"):
        log.append("other", {"step": 1})
    assert MetricsLog(tmp_path / "absent.jsonl").read() == []


def test_a_cut_last_line_is_skipped_and_a_bad_middle_line_named(tmp_path):
    log = _log(tmp_path)
    with log.path.open("a") as f:
        f.write('{"kind": "train", "ste')  # a kill in the middle of a write
    assert [r["step"] for r in log.train_records()] == [1, 2, 3, 4]
    assert len(log.numbered_records()) == 6
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match="line 2: not valid JSON"):
        log.numbered_records()


def test_truncate_after_keeps_the_records_up_to_a_step(tmp_path):
    log = _log(tmp_path)
    log.append(EVAL, {"step": 2, "val_loss": 9.0})  # a re-evaluation of step 2: the last one wins
    assert log.eval_records()[0]["val_loss"] == 9.0
    log.truncate_after(2)
    assert [(r["kind"], r["step"]) for r in log.read()] == [(TRAIN, 1), (TRAIN, 2), (EVAL, 2), (EVAL, 2)]
    log.truncate_after(0)
    assert log.read() == []
