"""The config base: strict from_dict, round trips, overrides with suggestions, file formats, field docs."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import ClassVar

import pytest

from isoflop.config import Config, ConfigError, apply_overrides, config, field_docs, load_file, valid_keys
from isoflop.nn.config import ModelConfig
from isoflop.recipes import RECIPES
from isoflop.train.spec import ExperimentConfig


def test_round_trip_every_recipe():
    for name, recipe in RECIPES.items():
        cfg = recipe()
        again = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg, name


def test_unknown_key_suggests_nearest():
    data = ExperimentConfig().to_dict()
    with pytest.raises(ConfigError) as e:
        apply_overrides(data, ["model.d_modle=64"], ExperimentConfig)
    assert e.value.key == "model.d_modle" and "model.d_model" in str(e.value)


def test_wrong_type_names_the_key():
    data = apply_overrides(ExperimentConfig().to_dict(), ["model.d_model=wide"], ExperimentConfig)
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_dict(data)
    assert e.value.key == "model.d_model" and "integer" in str(e.value)


def test_cross_field_check_names_the_key():
    data = apply_overrides(ExperimentConfig().to_dict(), ["model.n_heads=3"], ExperimentConfig)
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_dict(data)
    assert e.value.key == "model.n_heads" and "does not divide" in str(e.value)


def test_negative_learning_rate_is_rejected():
    data = apply_overrides(ExperimentConfig().to_dict(), ["optim.lr=-1e-3"], ExperimentConfig)
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_dict(data)
    assert e.value.key == "optim.lr"


def test_overrides_parse_types_and_switch_kinds():
    data = apply_overrides(ExperimentConfig().to_dict(),
                           ["train.horizon.tokens=1e6", "train.horizon.steps=null", "schedule.kind=wsd",
                            "schedule.decay=0.3", "model.tie_embeddings=true", "optim.betas=[0.9, 0.99]"],
                           ExperimentConfig)
    cfg = ExperimentConfig.from_dict(data)
    assert cfg.train.horizon.tokens == 1_000_000 and isinstance(cfg.train.horizon.tokens, int)
    assert cfg.schedule.kind == "wsd" and cfg.schedule.decay == 0.3
    assert cfg.model.tie_embeddings is True and cfg.optim.betas == (0.9, 0.99)


def test_unknown_kind_lists_choices():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_dict(apply_overrides(ExperimentConfig().to_dict(), ["schedule.kind=zigzag"],
                                                   ExperimentConfig))
    assert "cosine" in str(e.value) and e.value.key.startswith("schedule")


def test_exactly_one_horizon():
    data = apply_overrides(ExperimentConfig().to_dict(), ["train.horizon.tokens=1000"], ExperimentConfig)
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_dict(data)
    assert e.value.key == "train.horizon" and "exactly one" in str(e.value)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_load_file_formats(tmp_path, suffix):
    text = {".toml": "[model]\nd_model = 64\n", ".yaml": "model:\n  d_model: 64\n",
            ".json": '{"model": {"d_model": 64}}'}[suffix]
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert ExperimentConfig.from_dict(load_file(path)).model.d_model == 64


def test_unparsable_file_is_one_line_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("model = [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_every_config_field_has_a_docstring():
    """Every field of every config reachable from ExperimentConfig, every member of every variant family met on
    the way included, carries a docstring (the one `isoflop info` and the docs read)."""
    from isoflop.cli.tokenizer import M1Training
    from isoflop.config import Variant

    seen: set = set()

    def walk(cls):
        if cls in seen:
            return
        seen.add(cls)
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name in docs, f"{cls.__name__}.{f.name} has no docstring"
            for sub in _config_classes(hints[f.name]):
                walk(sub)
        if issubclass(cls, Variant):
            for kind in cls.kinds():
                walk(cls.variant_class(kind))

    for root in (ExperimentConfig, M1Training):
        walk(root)
    names = {cls.__name__ for cls in seen}
    assert {"MoEFFN", "SigmoidBias", "YarnRope", "Hwfa2Layout", "TopKMoD", "TigerConfig", "WSDSchedule",
            "EqualInfoACTokenizerConfig", "HorizonConfig"} <= names  # the walk reaches nested families


def _config_classes(tp):
    from isoflop.config import Config

    args = typing.get_args(tp) or (tp,)
    return [a for a in args if isinstance(a, type) and issubclass(a, Config)]


def test_valid_keys_follow_kind():
    keys = valid_keys(ExperimentConfig, {"schedule": {"kind": "wsd"}})
    assert "schedule.decay" in keys and "schedule.stretch" not in keys
    assert "model.rope.theta" in keys


def test_model_vocab_resolves_from_tokenizer():
    cfg = ExperimentConfig()
    assert cfg.model.vocab_size is None
    assert cfg.resolved_model.vocab_size % 64 == 0 and cfg.resolved_model.vocab_size >= cfg.data.tokenizer.vocab_size
    with pytest.raises(ValueError):
        ModelConfig().build()


def test_a_variant_may_be_written_as_its_kind_alone():
    """In a file (`"rope": "yarn"`) and on the command line (`--set model.rope=yarn`): the kind's defaults."""
    from isoflop.config import apply_overrides
    from isoflop.train.spec import ExperimentConfig

    base = ExperimentConfig().to_dict()
    by_name = ExperimentConfig.from_dict({**base, "schedule": "wsd"})
    assert by_name.schedule.to_dict() == ExperimentConfig.from_dict({**base, "schedule": {"kind": "wsd"}}).schedule.to_dict()
    data = apply_overrides(base, ["model.rope=yarn", "model.rope.factor=8"], ExperimentConfig)
    assert ExperimentConfig.from_dict(data).model.rope.kind == "yarn" and data["model"]["rope"]["factor"] == 8
    with pytest.raises(ConfigError, match="kind 'nope'"):
        ExperimentConfig.from_dict({**base, "schedule": "nope"})


def test_retired_keys_are_dropped_on_load_and_others_refused():
    @config
    class Knobs(Config):
        retired_keys: ClassVar[frozenset[str]] = frozenset({"old_knob"})
        width: int = 4

    assert Knobs.from_dict({"width": 8, "old_knob": 3}).to_dict() == {"width": 8}
    with pytest.raises(ConfigError, match="unknown key"):
        Knobs.from_dict({"wdith": 8})


def test_kind_switches_apply_outermost_first_in_any_order():
    data = ExperimentConfig().to_dict()
    out = apply_overrides(data, ["model.ffn.router.bias_update_rate=0.01", "model.ffn.router=sigmoid_bias",
                                 "model.ffn.kind=moe"], ExperimentConfig)
    router = ExperimentConfig.from_dict(out).model.ffn.router
    assert router.kind == "sigmoid_bias" and router.bias_update_rate == 0.01
    out = apply_overrides(data, ["model.ffn.router.kind=expert_choice", "model.ffn.kind=moe"], ExperimentConfig)
    assert ExperimentConfig.from_dict(out).model.ffn.router.kind == "expert_choice"
    with pytest.raises(ConfigError, match="unknown config key"):  # no MoE, so no router to switch
        apply_overrides(data, ["model.ffn.router.kind=expert_choice"], ExperimentConfig)


def test_every_variant_family_finds_all_its_kinds_from_its_own_module():
    """In a fresh interpreter that imports only the module defining a family, `kinds()` lists every member
    defined anywhere in the package: a member in a module the family does not name (`members=`) would be
    missing, which is how a kind in a new file silently fails to register."""
    import subprocess
    import sys

    code = """
import importlib, inspect, json, pkgutil, sys
import isoflop
from isoflop.config import Variant
families = {}
for info in pkgutil.walk_packages(isoflop.__path__, "isoflop."):
    if info.name.endswith("__main__"):
        continue
    module = importlib.import_module(info.name)
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, Variant) and "_members" in cls.__dict__:
            families[f"{cls.__module__}:{cls.__qualname__}"] = cls.kinds()
print(json.dumps(families))
"""
    everything = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout)
    assert len(everything) >= 9  # FFN, router, MoD, RoPE, layout, tied head, optimizer, schedule, tokenizer
    for family, kinds in everything.items():
        module, name = family.split(":")
        alone = f"import importlib, json; cls = getattr(importlib.import_module({module!r}), {name!r}); " \
                "print(json.dumps(cls.kinds()))"
        found = json.loads(subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True,
                                          check=True).stdout)
        assert found == kinds, family
