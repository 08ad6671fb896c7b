"""sweep.toml: the smallest spec reads with its documented defaults; bad keys, types and values name the key;
bad files name the file; every key is documented in its docstring and in docs/sweeps.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from isoflop.config import field_docs
from isoflop.errors import ConfigError
from isoflop.sweep.hparams import DeepSeekRule
from isoflop.sweep.spec import ShapeSpec, SweepSpec, load_spec, parse_spec

SMALLEST = 'base = "tiny"\nbudgets = [3e12, 1e13]\nsizes = 3\nmode = "grid"\n'
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sweeps.md"


def test_the_smallest_spec(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SMALLEST)
    spec = load_spec(path)
    assert spec.budgets == [3e12, 1e13] and spec.sizes == 3 and spec.mode == "grid" and spec.base == "tiny"
    assert isinstance(spec.hparams, DeepSeekRule) and spec.lr_grid == [1.0] and spec.seeds == [0]
    assert spec.cooldown == 0.2 and spec.shape == ShapeSpec() and spec.set == []
    assert SweepSpec.from_dict(spec.to_dict()) == spec


def test_explicit_sizes_and_sub_tables():
    spec = parse_spec('budgets = [1e13]\nsizes = [2e5, 4e5]\nmode = "fork"\nset = ["data.seq_len=128"]\n'
                      '[shape]\naspect = 16\nhead_dim = 32\n')
    assert spec.sizes == [2e5, 4e5] and spec.shape.aspect == 16.0 and spec.shape.head_dim == 32
    assert spec.set == ["data.seq_len=128"]


@pytest.mark.parametrize("line, key", [
    ("colour = 1", "colour"),
    ("budgets = []", "budgets"),
    ("budgets = [0]", "budgets"),
    ("budgets = [-1e12]", "budgets"),
    ('budgets = "1e12"', "budgets"),
    ("budgets = [1e12, 1e12]", "budgets"),
    ("sizes = 0", "sizes"),
    ("sizes = []", "sizes"),
    ("sizes = [1e5, -2]", "sizes"),
    ("sizes = [1e5, 1e5]", "sizes"),
    ("sizes = true", "sizes"),
    ("spread = 1.0", "spread"),
    ('prior = "chinchila"', "prior"),
    ('mode = "both"', "mode"),
    ("lr_grid = [0.5, 0]", "lr_grid"),
    ("lr_grid = []", "lr_grid"),
    ("seeds = [-1]", "seeds"),
    ("seeds = [0.5]", "seeds"),
    ("cooldown = 0", "cooldown"),
    ("cooldown = 1.2", "cooldown"),
    ('cooldown_shape = "cosine"', "cooldown_shape"),
    ("warmup_steps = -5", "warmup_steps"),
    ("evals = 0", "evals"),
    ("throughput = 0", "throughput"),
    ('set = "data.seq_len=64"', "set"),
    ("[shape]\nhead_dim = 0", "shape.head_dim"),
    ("[shape]\ntolerance = 1.5", "shape.tolerance"),
    ("[shape]\naspect = -1", "shape.aspect"),
    ("[shape]\nvocab_size = 100", "shape.vocab_size"),
])
def test_bad_keys_are_named(line, key):
    text = line if line.startswith("budgets") else f"budgets = [1e12]\n{line}"
    with pytest.raises(ConfigError) as e:
        parse_spec(text)
    assert e.value.key == key, str(e.value)


def test_budgets_are_required():
    with pytest.raises(ConfigError) as e:
        parse_spec('base = "tiny"\nsizes = 3')
    assert e.value.key == "budgets"


@pytest.mark.parametrize("text", ["base = ", "[[[", "budgets = [1e12\n", "\x00\x01binary"])
def test_a_garbage_file_is_named(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_spec(path)
    assert e.value.key == str(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such spec file") as e:
        load_spec(tmp_path / "nope.toml")
    assert e.value.key == str(tmp_path / "nope.toml")


def test_every_key_is_documented():
    """A docstring on every field, and a row for every key in docs/sweeps.md's "The spec" section."""
    guide = DOCS.read_text()
    section = guide.split("## The spec", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)`", section, flags=re.M))
    for cls, prefix in ((SweepSpec, ""), (ShapeSpec, "shape.")):
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
            assert prefix + f.name in documented, f"docs/sweeps.md does not list `{prefix + f.name}`"
