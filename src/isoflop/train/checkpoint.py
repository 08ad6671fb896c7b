"""Step checkpoints: DIR/checkpoints/step_NNNNNNN/{model.safetensors, optimizer.pt, state.json}.

Written atomically: everything goes into a hidden temporary directory, each file is fsynced, the directory is
renamed into place and its parent fsynced. A kill at any moment leaves either the complete new checkpoint or
none (plus a temporary directory that is ignored and cleaned up), so the newest `step_*` is always readable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STEP_DIR = re.compile(r"^step_(\d{7})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def save(run_dir: str | Path, step: int, model_state: dict[str, torch.Tensor], optim_state: dict[str, Any],
         state: dict[str, Any], *, keep: int) -> Path:
    """Write checkpoint `step`; keep the newest `keep`. `state` is JSON data (loader position, counters)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    if final.exists():
        return final
    tmp = root / f".tmp_{step_dir_name(step)}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    tensors, aliases = _dedupe_shared(model_state)
    save_file(tensors, str(tmp / "model.safetensors"))
    torch.save(optim_state, tmp / "optimizer.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "aliases": aliases}, indent=1))
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    os.rename(tmp, final)
    _fsync(root)
    _prune(root, keep)
    return final


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    steps = list_steps(run_dir)
    return Path(run_dir) / "checkpoints" / step_dir_name(steps[-1]) if steps else None


def list_steps(run_dir: str | Path) -> list[int]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name)))


def load(path: str | Path, *, with_optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """(model state, optimizer state or None, state.json) of one checkpoint directory."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    model_state = load_file(str(path / "model.safetensors"))
    for alias, source in state.get("aliases", {}).items():
        model_state[alias] = model_state[source]
    optim_state = torch.load(path / "optimizer.pt", weights_only=True) if with_optimizer else None
    rng = torch.load(path / "rng.pt", weights_only=True)
    state["rng"] = rng
    return model_state, optim_state, state


def _dedupe_shared(model_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors that share memory (tied embeddings): store each once, record aliases."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    tensors, aliases = {}, {}
    for name, t in model_state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.detach().contiguous()
    return tensors, aliases


def _prune(root: Path, keep: int) -> None:
    steps = sorted(int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name)))
    for step in steps[:-keep]:
        shutil.rmtree(root / step_dir_name(step), ignore_errors=True)
    for p in root.iterdir():  # temporaries left by a killed save
        if p.name.startswith(".tmp_") and not p.name.endswith(f"_{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
