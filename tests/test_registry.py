"""The one name lookup: entries by name, lazily imported ones, and one line with a suggestion when unknown."""

from __future__ import annotations

import pytest

from isoflop.config import ConfigError
from isoflop.registry import Registry, did_you_mean


def test_lookup_lazy_entries_and_suggestions():
    registry: Registry = Registry("widget", {"alpha": 1, "beta": "math:pi"})
    assert registry.get("alpha") == 1
    assert registry.get("beta") == pytest.approx(3.14159265)  # "module:attribute", imported on first use
    assert registry.names() == ["alpha", "beta"] and "alpha" in registry and len(registry) == 2
    with pytest.raises(ConfigError, match=r"no such widget \(did you mean 'alpha'\?\); choose from alpha, beta") as e:
        registry.get("alpah")
    assert e.value.key == "alpah"
    with pytest.raises(ConfigError, match="unknown thing 'zzz'; choose from") as e:
        Registry("thing", {"a": 1}, unknown="unknown thing").get("zzz", key="kind")
    assert e.value.key == "kind"


def test_did_you_mean():
    assert did_you_mean("tiyn", ["tiny", "small"]) == " (did you mean 'tiny'?)"
    assert did_you_mean("zzzz", ["tiny", "small"]) == ""
