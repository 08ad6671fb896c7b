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


def test_absolute_warmup_replaces_the_fraction_and_does_not_move_with_the_horizon():
    s = WSDSchedule(warmup=0.5, warmup_steps=4, decay=0.25)
    assert s.warmup_length(100) == s.warmup_length(20) == 4
    assert [s.multiplier(i, 100) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert CosineSchedule(warmup=0.1).warmup_length(50) == 5  # the fraction, when no count is given
    # a fork of 20 steps and a trunk of 100 agree on every step before the fork's decay starts (step 15)
    assert [s.multiplier(i, 20) for i in range(15)] == [s.multiplier(i, 100) for i in range(15)]
    assert s.multiplier(15, 20) < 1.0
    assert WSDSchedule(warmup_steps=0, decay=0.5).multiplier(0, 10) == 1.0


def test_absolute_warmup_is_checked_against_the_run():
    with pytest.raises(ConfigError) as e:
        ConstantSchedule(warmup_steps=-1)
    assert e.value.key == "warmup_steps"
    ConstantSchedule(warmup_steps=9).check(10)
    with pytest.raises(ConfigError) as e:
        ConstantSchedule(warmup_steps=10).check(10)
    assert e.value.key == "warmup_steps" and "10 steps" in e.value.problem
    WSDSchedule(warmup=0.9, warmup_steps=2, decay=0.5)  # the fraction is not the one used: no refusal here
    with pytest.raises(ConfigError) as e:
        WSDSchedule(warmup_steps=6, decay=0.5).check(10)
    assert e.value.key == "warmup_steps"
