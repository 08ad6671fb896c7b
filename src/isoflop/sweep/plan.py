"""What a sweep will train: the SweepPlan (the sweep folder's plan file, sweep/layout.py) and one PlannedRun per
run folder.

grid.py makes a plan from a spec; the executors read it to know what to train and from where; the fit joins
each run's record with its planned cell (budget, learning-rate multiplier, role). The plan is plain data so
that it is readable without torch and stable across versions (`version`).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from isoflop.errors import ConfigError

PLAN_VERSION = 1
ROLES = ("grid", "trunk", "fork", "rung")
"""grid: one run per (budget, size) cell. trunk: fork mode's warmup-stable-decay run of one size, trained to the
largest budget using that size (it is that cell's run). fork: a cooldown from a trunk checkpoint, one per other
(budget, size) cell. rung: the validating run `sweep predict` adds."""


@dataclass(frozen=True, kw_only=True)
class InitPoint:
    """Where a fork starts: a checkpoint of another run of the same sweep."""

    key: str
    """The run (a key of the same plan) whose checkpoint is loaded."""
    step: int
    """Its checkpoint step."""
    optimizer: bool = True
    """Also load the optimizer state (a fork continues the trunk's optimizer)."""
    data: bool = True
    """Also continue the trunk's data position (and RNG)."""


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    key: str
    """Folder name under runs/: a readable prefix and a short hash of `config`; the same config gives the same key."""
    role: str
    """One of ROLES."""
    budget: float | None
    """The cell's compute budget C in counted training FLOPs (a trunk: the largest budget it serves, whose cell
    it is; its forks have the others). None only for a run outside the grid."""
    target_params: float
    """The size asked for (total parameters); the shape's count is in `params`."""
    shape: dict[str, Any]
    """science.shape.Shape.to_dict() of the model."""
    params: dict[str, int]
    """Counted parameter groups (total, embedding, non_embedding, active)."""
    steps: int
    tokens: int
    flops_per_token: int
    """Counted training FLOPs per token (forward + backward) at the run's sequence length."""
    flops: float
    """Counted training FLOPs of the whole horizon, tokens * flops_per_token (a fork: as if trained from scratch)."""
    flops_6nd: float
    """6 * N_total * tokens, shown beside `flops`."""
    bill_flops: float
    """FLOPs this run itself spends: a fork only its cooldown steps (the trunk paid the rest)."""
    lr: float
    batch_size: int
    """Sequences per optimizer step."""
    lr_multiplier: float = 1.0
    """This run's learning rate over the rule's (1 unless the spec has an lr grid)."""
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    """The full ExperimentConfig as plain data: what the run trains."""
    init_from: InitPoint | None = None
    """A fork's starting checkpoint; None for runs trained from scratch."""
    est_time_s: float | None = None
    """Estimated training seconds on the machine the plan assumed (grid.py says how)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the sweep plan") -> PlannedRun:
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if not isinstance(data, dict) or not {"key", "role", "config"} <= set(data):
            raise ConfigError(where, "a planned run needs at least key, role and config")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(where, f"run {data.get('key')!r} has unknown fields {unknown}")
        data = dict(data)
        if data.get("init_from") is not None:
            data["init_from"] = InitPoint(**data["init_from"])
        if data["role"] not in ROLES:
            raise ConfigError(where, f"run {data['key']!r} has role {data['role']!r}; known: {', '.join(ROLES)}")
        absent = sorted(required - set(data))
        if absent:
            raise ConfigError(where, f"run {data.get('key')!r} lacks {absent}")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    mode: str
    """"grid" or "fork": the mode the spec asked for (`runs` are that mode's runs)."""
    budgets: list[float]
    runs: list[PlannedRun]
    bills: dict[str, float]
    """FLOPs each mode would spend on the same cells: {"grid": ..., "fork": ...}."""
    spec: dict[str, Any]
    """The spec as resolved (defaults filled in)."""
    base: dict[str, Any] = field(default_factory=dict)
    """The base config every run derives from (the spec's `base` with its `set`), so that the sweep folder
    needs no file outside it (`sweep predict` builds its rung from it)."""
    version: int = PLAN_VERSION

    def run(self, key: str) -> PlannedRun:
        for r in self.runs:
            if r.key == key:
                return r
        raise ConfigError(key, "no such run in this sweep's plan")

    def keys(self) -> list[str]:
        return [r.key for r in self.runs]

    def with_runs(self, extra: list[PlannedRun]) -> SweepPlan:
        """This plan with `extra` runs appended (a rung); keys already there are kept, not doubled."""
        have = set(self.keys())
        return SweepPlan(mode=self.mode, budgets=self.budgets, bills=self.bills, spec=self.spec, base=self.base,
                         runs=self.runs + [r for r in extra if r.key not in have], version=self.version)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "mode": self.mode, "budgets": self.budgets, "bills": self.bills,
                "spec": self.spec, "base": self.base, "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "the sweep plan") -> SweepPlan:
        if not isinstance(data, dict) or "runs" not in data:
            raise ConfigError(where, "not a sweep plan (no runs)")
        version = data.get("version", PLAN_VERSION)
        if version > PLAN_VERSION:
            raise ConfigError(where, f"written by a newer isoflop (plan version {version} > {PLAN_VERSION})")
        runs = [PlannedRun.from_dict(r, where) for r in data["runs"]]
        return cls(mode=data["mode"], budgets=list(data["budgets"]), runs=runs, bills=dict(data.get("bills", {})),
                   spec=dict(data.get("spec", {})), base=dict(data.get("base", {})), version=version)
