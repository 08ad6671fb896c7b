"""Named recipes: functions returning an ExperimentConfig. `isoflop train NAME` looks them up here."""

from __future__ import annotations

from collections.abc import Callable

from isoflop.recipes.baseline import gpt2_124m, small, tiny
from isoflop.recipes.sparse import mod_tiny, mode_tiny, moe_tiny
from isoflop.registry import Registry
from isoflop.train.spec import ExperimentConfig

RECIPES: Registry[Callable[[], ExperimentConfig]] = Registry("recipe", {
    "tiny": tiny,
    "small": small,
    "gpt2-124m": gpt2_124m,
    "moe-tiny": moe_tiny,
    "mod-tiny": mod_tiny,
    "mode-tiny": mode_tiny,
}, unknown="no such recipe or config file")


def get_recipe(name: str) -> ExperimentConfig:
    """A fresh config of the recipe `name`; ConfigError (with a suggestion) for an unknown name."""
    return RECIPES.get(name)()
