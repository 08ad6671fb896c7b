"""Plan resolution: every horizon unit, the batch split over ranks, FLOPs bookkeeping, every recipe."""

from __future__ import annotations

import math

import pytest

from isoflop.config import ConfigError, apply_overrides
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.recipes import RECIPES, get_recipe
from isoflop.train.run_plan import resolve_plan
from isoflop.train.spec import ExperimentConfig


def _cfg(*overrides: str) -> ExperimentConfig:
    data = apply_overrides(get_recipe("tiny").to_dict(), ["train.horizon.steps=null", *overrides], ExperimentConfig)
    return ExperimentConfig.from_dict(data)


def test_each_horizon_unit_resolves_to_whole_steps():
    tokens_per_step = 16 * 256
    assert resolve_plan(_cfg("train.horizon.steps=7")).steps == 7
    assert resolve_plan(_cfg(f"train.horizon.tokens={10 * tokens_per_step + 1}")).steps == 11  # rounded up
    cfg = _cfg("train.horizon.flops=1e12")
    per_token = flops_per_token(cfg.resolved_model, 256).training
    assert resolve_plan(cfg).steps == math.ceil(1e12 / (per_token * tokens_per_step))
    cfg = _cfg("train.horizon.tokens_per_param=20")
    n_total = param_groups(cfg.resolved_model).total
    plan = resolve_plan(cfg)
    assert plan.steps == math.ceil(20 * n_total / tokens_per_step)
    assert plan.tokens >= 20 * n_total > plan.tokens - tokens_per_step


def test_flops_are_tokens_times_per_token_cost():
    plan = resolve_plan(_cfg("train.horizon.steps=5"))
    assert plan.tokens == 5 * plan.tokens_per_step
    assert plan.flops == plan.tokens * plan.flops_per_token


def test_batch_splits_over_ranks_and_micro_batches():
    plan = resolve_plan(_cfg("train.horizon.steps=1", "train.batch_size=32", "train.micro_batch_size=4"), 2)
    assert (plan.global_batch, plan.micro_batch, plan.grad_accum, plan.world_size) == (32, 4, 4, 2)
    with pytest.raises(ConfigError) as e:
        resolve_plan(_cfg("train.horizon.steps=1", "train.batch_size=30"), 4)
    assert e.value.key == "train.batch_size"
    with pytest.raises(ConfigError) as e:
        resolve_plan(_cfg("train.horizon.steps=1", "train.batch_size=32", "train.micro_batch_size=3"))
    assert e.value.key == "train.micro_batch_size"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_resolves(name):
    plan = resolve_plan(get_recipe(name))
    assert plan.steps >= 1 and plan.params["total"] > 0


@pytest.mark.parametrize("overrides,key", [
    (["train.horizon.steps=10", "schedule.warmup_steps=10"], "schedule.warmup_steps"),
    (["train.horizon.steps=10", "schedule.kind=wsd", "schedule.decay=0.5", "schedule.warmup_steps=6"],
     "schedule.warmup_steps"),
    (["train.horizon.steps=10", "checkpoint.at=[4, 11]"], "checkpoint.at"),
])
def test_plan_refuses_what_does_not_fit_the_steps(overrides, key):
    with pytest.raises(ConfigError) as e:
        resolve_plan(_cfg(*overrides))
    assert e.value.key == key


def test_checkpoint_at_takes_positive_steps_and_the_absolute_warmup_is_planned():
    plan = resolve_plan(_cfg("train.horizon.steps=10", "schedule.warmup_steps=3", "checkpoint.at=[4, 10]"))
    assert plan.warmup_steps == 3
    for bad in ("[0]", "[-2]", "[1.5]"):
        with pytest.raises(ConfigError) as e:
            _cfg("train.horizon.steps=10", f"checkpoint.at={bad}")
        assert e.value.key == "checkpoint.at"
