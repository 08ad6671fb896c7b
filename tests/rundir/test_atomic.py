"""Atomic writers: a file or folder is the old one or the new one, never half; leftovers are not left."""

from __future__ import annotations

import json

import pytest

from isoflop.config import ConfigError
from isoflop.rundir import atomic


def test_write_json_replaces_whole(tmp_path):
    path = tmp_path / "x.json"
    atomic.write_json(path, {"a": 1})
    atomic.write_json(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and path.read_text().endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_build_dir_appears_whole_or_not_at_all(tmp_path):
    def fill(folder):
        (folder / "a").write_text("a")
        (folder / "b").mkdir()

    atomic.build_dir(tmp_path / "out", fill)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"]

    def broken(folder):
        (folder / "a").write_text("a")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic.build_dir(tmp_path / "other", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half folder, no temporary
    (tmp_path / "empty").mkdir()
    atomic.build_dir(tmp_path / "empty", fill)  # an empty folder is replaced
    with pytest.raises(ConfigError, match="not an empty directory"):
        atomic.build_dir(tmp_path / "out", fill)


def test_copy_dir(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "f").write_bytes(b"\x00\xff")
    atomic.copy_dir(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "sub" / "f").read_bytes() == b"\x00\xff"
