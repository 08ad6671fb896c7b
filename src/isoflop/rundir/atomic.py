"""Writing files and folders so that a kill at any moment leaves the old state or the new one, never half.

A file is written to a temporary sibling, flushed to disk and renamed over its target (one `os.replace`). A
folder is filled inside a hidden temporary sibling and renamed into place, which POSIX allows over an empty
folder too. Temporaries carry the writer's pid, so a crashed writer's leftovers are recognisable.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isoflop.errors import ConfigError


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` by `data` atomically (its folder must exist)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """JSON (indent 1, a final newline) written atomically."""
    write_text(path, json.dumps(data, indent=1) + "\n")


def check_empty_or_absent(folder: str | Path) -> None:
    """ConfigError naming `folder` unless it is absent or an empty folder: the one 'safe to write' check."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(str(folder), "exists and is not an empty directory")


def build_dir(out: str | Path, fill: Callable[[Path], None]) -> None:
    """Create the folder `out` (absent or empty) with `fill(tmp)` run on a hidden sibling, then renamed into
    place: `out` appears whole or not at all. Anything `fill` raises leaves no trace."""
    out = Path(out)
    check_empty_or_absent(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        os.replace(tmp, out)  # replaces an empty folder too (POSIX rename)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded


def copy_dir(source: str | Path, target: str | Path) -> None:
    """Copy the folder `source` to `target` (absent or empty) atomically."""
    build_dir(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
