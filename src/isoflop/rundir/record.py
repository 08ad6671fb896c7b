"""RunRecord: what a finished run is, as run.json holds it. Written by the trainer last; read by the science
verbs (a (N, D, C, L) point), `report`, surgery and the CLI.

Versions
    1  (no `version` key) written up to 2026-12-04; `training_time_s` from 2026-11-22 on, the causal-routing
       losses from then only for MoD runs with a causal rule.
    2  the same keys plus `version`.
A record of a later version than this code knows is refused: its meaning may have changed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from isoflop.errors import ConfigError

RECORD_VERSION = 2

POINT_KEYS = {"N": "N_total", "D": "D_tokens", "C": "flops", "L": "val_loss"}
"""The record key each coordinate of a scaling-law point reads by default: parameters N (all of them, as
Hoffmann et al. 2022 count), training tokens D, training FLOPs C, final validation loss L."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A finished run: its counts, its budget, its final evaluation, where and how long it ran."""

    N_total: int
    """Parameters, all of them (embedding included)."""
    N_active: int
    """Parameters one token passes through (less than N_total for MoE)."""
    N_non_embedding: int
    """Parameters outside the vocabulary-sized matrices (Kaplan et al. 2020's N)."""
    N_embedding: int
    """The token embedding, plus the output head when it is untied."""
    D_tokens: int
    """Training tokens."""
    D_bytes: int
    """Training bytes those tokens stand for (at the training split's bytes per token)."""
    flops: float
    """Training FLOPs by isoflop's counting convention (nn/counting.py)."""
    flops_per_token: int
    """Training (forward + backward) FLOPs per token."""
    steps: int
    """Optimizer steps."""
    seq_len: int
    """Tokens per training sequence."""
    val_loss: float
    """Final validation loss, nats per token."""
    val_bpb: float
    """Final validation bits per byte."""
    wall_time_s: float
    """Seconds from start to finish, over all sessions of a resumed run."""
    training_time_s: float | None
    """Seconds of training steps alone (no evaluations, no checkpoints); None in records before 2026-11-22."""
    world_size: int
    """Data-parallel ranks."""
    device: str
    """'cpu' or 'cuda'."""
    tokenizer: str
    """The tokenizer kind."""
    vocab_size: int
    """The tokenizer's vocabulary (the model's rows may be padded past it)."""
    torch: str
    """The torch version that trained it."""
    val_loss_causal: float | None = None
    """Final validation loss under the causal routing rule sampling uses (MoD with a predictor), else None."""
    val_bpb_causal: float | None = None
    """Bits per byte under that rule, else None."""
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        """run.json's content: every field, the causal-routing ones only when the run has them."""
        out = dataclasses.asdict(self)
        for key in ("val_loss_causal", "val_bpb_causal"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "run.json") -> RunRecord:
        """A record of any version up to RECORD_VERSION; ConfigError naming `where` for anything else."""
        if not isinstance(data, dict):
            raise ConfigError(where, f"expected a JSON object, found {type(data).__name__}")
        version = data.get("version", 1)
        if not isinstance(version, int) or not 1 <= version <= RECORD_VERSION:
            raise ConfigError(where, f"record version {version!r} is not one this isoflop reads "
                                     f"(1..{RECORD_VERSION}); a newer isoflop wrote it?")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            optional = field.default is not dataclasses.MISSING or field.name == "training_time_s"
            if field.name not in data:
                if not optional:
                    raise ConfigError(where, f"no key '{field.name}' (a run record has {', '.join(_names())})")
                continue
            values[field.name] = data[field.name]
        values["version"] = RECORD_VERSION
        values.setdefault("training_time_s", None)
        return cls(**values)

    def value(self, key: str, *, where: str = "run.json") -> float:
        """The number under record key `key` (for a point's coordinate); ConfigError naming the keys otherwise."""
        if key not in _names():
            raise ConfigError(where, f"no key '{key}' (keys: {', '.join(_names())})")
        value = getattr(self, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(where, f"'{key}' is {value!r}, not a finite number")
        return float(value)


def _names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunRecord)]
