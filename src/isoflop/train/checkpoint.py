"""Step checkpoints: what lies inside one checkpoint folder of a run directory (where the folders are and how
they are named is the run directory's, rundir/layout.py):

    model.safetensors   the model's full (unsharded) state; tensors shared by tying stored once
    optimizer.pt        the optimizer's full state, keyed by parameter name
    rng.pt              torch's RNG state
    state.json          JSON data: the loader's position, training and wall seconds, the step, tensor aliases

Written atomically: everything goes into a hidden temporary folder, each file is fsynced, the folder is renamed
into place and its parent fsynced. A kill at any moment leaves either the complete new checkpoint or none (plus
a temporary folder that is ignored and cleaned up), so the newest `step_*` is always readable.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from isoflop.rundir import RunDir

_TMP_PREFIX = ".tmp_"


def save(run: RunDir, step: int, model_state: dict[str, torch.Tensor], optim_state: dict[str, Any] | None,
         state: dict[str, Any], *, keep: int, protect: Collection[int] = ()) -> Path:
    """Write checkpoint `step`; keep the newest `keep` of those not in `protect`, and every one in `protect`.
    `state` is JSON data (loader position, counters)."""
    root, final = run.checkpoints_dir, run.step_dir(step)
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():
        return final
    tmp = root / f"{_TMP_PREFIX}{final.name}_{os.getpid()}"
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
    _prune(run, keep, protect)
    return final


def load(path: str | Path, *, with_optimizer: bool = True
         ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """(model state, optimizer state or None, state.json plus "rng") of one checkpoint folder."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    model_state = load_file(str(path / "model.safetensors"))
    for alias, source in state.get("aliases", {}).items():
        model_state[alias] = model_state[source]
    optim_state = torch.load(path / "optimizer.pt", weights_only=True) if with_optimizer else None
    state["rng"] = torch.load(path / "rng.pt", weights_only=True)
    return model_state, optim_state, state


def read_state(path: str | Path) -> dict[str, Any]:
    """state.json of one checkpoint folder (the step, the loader's position, the seconds), without the tensors."""
    return json.loads((Path(path) / "state.json").read_text())


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of every model tensor in one checkpoint folder (aliases included), read from the header."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    for alias, source in read_state(path).get("aliases", {}).items():
        shapes[alias] = shapes[source]
    return shapes


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


def _prune(run: RunDir, keep: int, protect: Collection[int]) -> None:
    prunable = [s for s in run.checkpoint_steps() if s not in protect]
    for step in prunable[:-keep]:
        shutil.rmtree(run.step_dir(step), ignore_errors=True)
    for p in run.checkpoints_dir.iterdir():  # temporaries left by a killed save
        if p.name.startswith(_TMP_PREFIX) and not p.name.endswith(f"_{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
