"""Named recipes: functions returning an ExperimentConfig. `isoflop train NAME` looks them up here."""

from __future__ import annotations

from collections.abc import Callable

from isoflop.config import ConfigError
from isoflop.recipes.baseline import gpt2_124m, small, tiny
from isoflop.recipes.sparse import mod_tiny, mode_tiny, moe_tiny
from isoflop.train.spec import ExperimentConfig

RECIPES: dict[str, Callable[[], ExperimentConfig]] = {
    "tiny": tiny,
    "small": small,
    "gpt2-124m": gpt2_124m,
    "moe-tiny": moe_tiny,
    "mod-tiny": mod_tiny,
    "mode-tiny": mode_tiny,
}


def get_recipe(name: str) -> ExperimentConfig:
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, RECIPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(name, f"no such recipe or config file{hint}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]()
