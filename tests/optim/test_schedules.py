"""Learning-rate schedules: shapes at their defining points."""

from __future__ import annotations

import math

import pytest

from isoflop.config import ConfigError
from isoflop.optim.schedules import ConstantSchedule, CosineSchedule, LinearSchedule, WSDSchedule


def test_warmup_is_linear_to_the_peak():
    s = CosineSchedule(warmup=0.1, floor=0.0)
    assert [s.multiplier(i, 100) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert s.multiplier(10, 100) == pytest.approx(1.0)


def test_cosine_ends_at_floor_and_is_half_way_in_the_middle():
    s = CosineSchedule(warmup=0.0, floor=0.1)
    assert s.multiplier(0, 101) == pytest.approx(1.0)
    assert s.multiplier(50, 101) == pytest.approx(0.55)
    assert s.multiplier(100, 101) == pytest.approx(0.1)


def test_stretched_cosine_stops_above_the_floor():
    s = CosineSchedule(warmup=0.0, floor=0.0, stretch=2.0)
    assert s.multiplier(100, 101) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert CosineSchedule(stretch=1.0, floor=0.0).multiplier(100, 101) < s.multiplier(100, 101)


def test_wsd_is_flat_then_decays_to_floor():
    s = WSDSchedule(warmup=0.0, decay=0.2, floor=0.0)
    assert [s.multiplier(i, 100) for i in (0, 50, 79)] == [1.0, 1.0, 1.0]
    assert s.multiplier(89, 100) == pytest.approx(0.5)
    assert s.multiplier(99, 100) == pytest.approx(0.0)
    assert WSDSchedule(decay=0.2, shape="sqrt").multiplier(89, 100) == pytest.approx(1 - math.sqrt(0.5))


def test_linear_and_constant():
    assert LinearSchedule(floor=0.2).multiplier(99, 100) == pytest.approx(0.2)
    assert LinearSchedule(floor=0.2).multiplier(0, 100) == pytest.approx(1.0)
    assert ConstantSchedule(warmup=0.5).multiplier(60, 100) == 1.0


def test_bad_knobs_name_their_key():
    with pytest.raises(ConfigError) as e:
        CosineSchedule(stretch=0.5)
    assert e.value.key == "stretch"
    with pytest.raises(ConfigError) as e:
        WSDSchedule(warmup=0.5, decay=0.6)
    assert e.value.key == "decay"
