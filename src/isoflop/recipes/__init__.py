"""Named recipes: functions returning an ExperimentConfig. `isoflop train NAME` looks them up here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from isoflop.config import load_file
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


CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def experiment_data(target: str | Path) -> dict[str, Any]:
    """The plain config data of a recipe name or a config file; a file may name a recipe to start from
    (`base = "tiny"`), its own keys merged over that recipe's (a variant table with its own `kind` replaces the
    recipe's whole table, since another kind has other knobs). ConfigError for an unknown name or a bad file."""
    path = Path(target)
    if path.suffix in CONFIG_SUFFIXES or path.is_file():
        data = load_file(path)
        base = data.pop("base", None)
        if base is not None:
            data = _deep_merge(get_recipe(str(base)).to_dict(), data)
        return data
    return get_recipe(str(target)).to_dict()


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "kind" not in value:
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
