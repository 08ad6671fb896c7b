"""inverse_sqrt and constant_cooldown schedules."""

from __future__ import annotations

import math

import pytest

from isoflop.config import ConfigError
from isoflop.optim.schedules import (
    ConstantCooldownSchedule,
    InverseSqrtSchedule,
    ScheduleConfig,
    WSDSchedule,
)


def test_inverse_sqrt_is_one_at_end_of_warmup_then_falls_as_rsqrt():
    s = InverseSqrtSchedule(warmup=0.1)
    assert [s.multiplier(i, 100) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert s.multiplier(9, 100) == pytest.approx(1.0)
    assert s.multiplier(10, 100) == pytest.approx(math.sqrt(10 / 11))
    assert s.multiplier(39, 100) == pytest.approx(0.5)  # n = 40 = 4 W
    assert s.multiplier(99, 100) == pytest.approx(math.sqrt(10 / 100))


def test_inverse_sqrt_without_warmup_starts_at_one():
    s = InverseSqrtSchedule()
    assert s.multiplier(0, 50) == 1.0
    assert s.multiplier(3, 50) == pytest.approx(0.5)


def test_inverse_sqrt_cooldown_is_linear_to_the_floor():
    s = InverseSqrtSchedule(warmup=0.1, cooldown=0.2, floor=0.0)
    before = s.multiplier(79, 100)
    assert before == pytest.approx(math.sqrt(10 / 80))  # untouched up to the cooldown
    assert s.multiplier(89, 100) == pytest.approx(before * 0.5)
    assert s.multiplier(99, 100) == pytest.approx(0.0)
    values = [s.multiplier(i, 100) for i in range(80, 100)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert InverseSqrtSchedule(warmup=0.1, cooldown=0.2, floor=0.05).multiplier(99, 100) == pytest.approx(0.05)


def test_constant_cooldown_is_wsd_under_its_own_kind():
    cc = ConstantCooldownSchedule(warmup=0.05, decay=0.3, floor=0.1)
    wsd = WSDSchedule(warmup=0.05, decay=0.3, floor=0.1)
    assert [cc.multiplier(i, 200) for i in range(200)] == [wsd.multiplier(i, 200) for i in range(200)]
    assert cc.multiplier(100, 200) == 1.0 and cc.multiplier(199, 200) == pytest.approx(0.1)
    assert cc.to_dict()["kind"] == "constant_cooldown"
    back = ScheduleConfig.from_dict(cc.to_dict())
    assert type(back) is ConstantCooldownSchedule and back == cc
    assert type(ScheduleConfig.from_dict({"kind": "inverse_sqrt", "cooldown": 0.1})) is InverseSqrtSchedule
    assert {"inverse_sqrt", "constant_cooldown"} <= set(ScheduleConfig.kinds())


def test_bad_inverse_sqrt_knobs_name_their_key():
    with pytest.raises(ConfigError) as e:
        InverseSqrtSchedule(warmup=0.5, cooldown=0.6)
    assert e.value.key == "cooldown"
    with pytest.raises(ConfigError) as e:
        InverseSqrtSchedule(floor=2.0)
    assert e.value.key == "floor"
