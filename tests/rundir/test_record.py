"""RunRecord: every version this code knows reads; a newer one, or a partial one, is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isoflop.config import ConfigError
from isoflop.rundir import RECORD_VERSION, RunRecord

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_2586d9e" / "run.json"


def _v1() -> dict:
    return json.loads(FIXTURE.read_text())


def test_version_1_reads_and_writes_back_as_the_current_version():
    data = _v1()
    assert "version" not in data
    record = RunRecord.from_dict(data)
    out = record.to_dict()
    assert out == {**data, "version": RECORD_VERSION}  # the same keys and values, plus the version
    assert RunRecord.from_dict(out) == record


def test_records_before_training_time_and_causal_losses():
    data = _v1()
    del data["training_time_s"]  # as written before 2026-11-22
    record = RunRecord.from_dict(data)
    assert record.training_time_s is None and "val_loss_causal" not in record.to_dict()
    causal = RunRecord.from_dict({**_v1(), "val_loss_causal": 3.0, "val_bpb_causal": 4.0})
    assert causal.to_dict()["val_loss_causal"] == 3.0


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.pop("val_loss"), "no key 'val_loss'"),
    (lambda d: d.update(version=RECORD_VERSION + 1), "a newer isoflop"),
    (lambda d: d.update(version="2"), "record version '2'"),
])
def test_bad_records_are_refused_naming_the_file(change, needle):
    data = _v1()
    change(data)
    with pytest.raises(ConfigError, match=needle) as e:
        RunRecord.from_dict(data, where="runs/x/run.json")
    assert e.value.key == "runs/x/run.json"
    with pytest.raises(ConfigError, match="expected a JSON object"):
        RunRecord.from_dict([1, 2])


def test_value_names_the_keys():
    record = RunRecord.from_dict(_v1())
    assert record.value("N_non_embedding") == 3888.0
    with pytest.raises(ConfigError, match="no key 'N_foo'"):
        record.value("N_foo")
    with pytest.raises(ConfigError, match="not a finite number"):
        record.value("device")
