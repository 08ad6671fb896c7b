"""A sweep's runs as fit points: each complete run's record joined with its planned cell, and every run that
cannot be fitted listed with the reason.

A run is fitted when it is planned (a key of the sweep's plan), complete (its run record is there and readable,
with finite positive counts and loss) and trained what the plan says (its saved config, read through today's
schema, equals the planned one). Otherwise it is excluded with a status:

    pending     planned, not started (no run folder, or one without a config)
    running     started, not complete, and a trainer holds its lock now
    incomplete  started, not complete, nobody training it (stopped or killed; `sweep run` resumes it)
    failed      the trainer (or the executor) recorded a failure: its reason and step
    corrupt     unreadable record or config, non-finite values, or a config that differs from the plan
    unplanned   a folder under runs/ that the plan does not name (never fitted, never deleted)

A fork-mode trunk is the run of the largest budget its size serves (a point, like the forks cooled down from
it); a trunk without a budget is only the forks' source. Rungs (`sweep predict`) test the fit and are kept apart.
With a learning-rate grid, the cell (budget, size, seed) keeps its lowest-loss run, and `LrCell` says how far
that best multiplier sits from the grid's edge: a best at the edge means the optimum may lie beyond the grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from isoflop.errors import ConfigError
from isoflop.rundir import RunDir, RunRecord
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.plan import PlannedRun, SweepPlan

FITTED_ROLES = ("grid", "fork", "trunk")
"""Roles whose runs are points of the fit when they have a budget (a rung is the fit's test, not a point)."""


def is_cell(run: PlannedRun) -> bool:
    """Whether a planned run is a point of the fit: a grid run, a fork, or a trunk that is a budget's run."""
    return run.role in FITTED_ROLES and run.budget is not None


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One complete run of the sweep: its planned cell and its measured counts and loss."""

    key: str
    role: str
    budget: float
    """The planned budget C (counted training FLOPs)."""
    target_params: float
    lr_multiplier: float
    seed: int
    N_total: float
    N_non_embedding: float
    N_embedding: float
    D: float
    """Training tokens."""
    flops: float
    """Counted training FLOPs (the record's)."""
    loss: float
    """Final validation loss, nats per token."""

    @property
    def flops_6nd(self) -> float:
        return 6.0 * self.N_total * self.D

    def to_dict(self) -> dict:
        return {**asdict(self), "flops_6nd": self.flops_6nd}


@dataclass(frozen=True, kw_only=True)
class Excluded:
    """A planned run (or a stray folder) that is not fitted, and why."""

    key: str
    role: str | None
    status: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class LrCell:
    """One (budget, size, seed) cell of a learning-rate grid: the multipliers planned, the losses measured (None
    where the run is not fitted) and where the best one sits."""

    budget: float
    target_params: float
    seed: int
    multipliers: list[float]
    losses: list[float | None]
    keys: list[str]
    best_key: str
    best_multiplier: float
    best_index: int
    """Index of the best multiplier among the planned ones, ascending."""
    edge_distance: int
    """Steps from the nearer end of the grid: 0 means the best is the smallest or the largest multiplier."""
    at_low_edge: bool
    at_high_edge: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class SweepPoints:
    """What `collect` found in a sweep folder."""

    points: list[SweepPoint]
    """Every fitted run, every learning rate."""
    best: list[SweepPoint]
    """The fit's points: per cell the lowest-loss learning rate (all of `points` without an lr grid)."""
    lr_cells: list[LrCell]
    """One per cell when the plan has more than one multiplier in some cell, else empty."""
    rungs: list[SweepPoint]
    excluded: list[Excluded]
    n_planned: int


def collect(sweep: SweepDir, plan: SweepPlan | None = None) -> SweepPoints:
    """Read every planned run of `sweep` (ConfigError when it is not a sweep folder)."""
    plan = sweep.read_plan() if plan is None else plan
    points: list[SweepPoint] = []
    rungs: list[SweepPoint] = []
    excluded: list[Excluded] = []
    for planned in plan.runs:
        if not (is_cell(planned) or planned.role == "rung"):
            continue
        point, why = _read(sweep.run_dir(planned.key), planned)
        if why is not None:
            excluded.append(why)
        elif planned.role == "rung":
            rungs.append(point)
        else:
            points.append(point)
    excluded += _unplanned(sweep, plan)
    best, cells = _best_per_cell(points, plan)
    return SweepPoints(points=points, best=best, lr_cells=cells, rungs=rungs, excluded=excluded,
                       n_planned=sum(is_cell(r) for r in plan.runs))


def normalized_config(config: dict) -> dict:
    """A config read through today's schema (a field added since, at its default, is no difference)."""
    from isoflop.train.spec import ExperimentConfig  # config dataclasses only: torch-free

    return ExperimentConfig.from_dict(config).to_dict()


def _read(run: RunDir, planned: PlannedRun) -> tuple[SweepPoint | None, Excluded | None]:
    def out(status: str, reason: str) -> tuple[None, Excluded]:
        return None, Excluded(key=planned.key, role=planned.role, status=status, reason=reason)

    failure = _failure(run)
    if not run.is_complete():
        if failure is not None:
            step = failure.get("step")
            return out("failed", str(failure.get("reason", "failed")) + (f" (at step {step})" if step is not None
                                                                         else ""))
        if not run.is_run():
            return out("pending", "not started")
        if run.is_locked():
            return out("running", "being trained now")
        return out("incomplete", "started but not finished (no run record); `sweep run` resumes it")
    try:
        record = run.read_record()
        saved = normalized_config(run.read_config())
    except ConfigError as e:
        return out("corrupt", str(e))
    try:
        planned_config = normalized_config(planned.config)
    except ConfigError as e:
        return out("corrupt", f"the plan's config does not read: {e}")
    if saved != planned_config:
        from isoflop.rundir import first_difference

        return out("corrupt", f"trained another config than the plan's (differs at {first_difference(saved, planned_config)})")
    bad = _bad_values(record)
    if bad:
        return out("corrupt", bad)
    return SweepPoint(key=planned.key, role=planned.role, budget=float(planned.budget or planned.flops),
                      target_params=float(planned.target_params), lr_multiplier=float(planned.lr_multiplier),
                      seed=int(planned.seed), N_total=float(record.N_total),
                      N_non_embedding=float(record.N_non_embedding), N_embedding=float(record.N_embedding),
                      D=float(record.D_tokens), flops=float(record.flops), loss=float(record.val_loss)), None


def _bad_values(record: RunRecord) -> str | None:
    for key in ("N_total", "N_non_embedding", "D_tokens", "flops", "val_loss"):
        value = getattr(record, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return f"its record has {key} = {value!r}, not a finite positive number"
    return None


def _failure(run: RunDir) -> dict | None:
    """The run's failure record (written by the trainer or the executor), None when it has none; an unreadable
    one still reads as a failure."""
    try:
        failure = run.read_failure()
    except ConfigError as e:
        return {"reason": f"unreadable failure record ({e.problem})"}
    return failure if failure is None or isinstance(failure, dict) else {"reason": "unreadable failure record"}


def _unplanned(sweep: SweepDir, plan: SweepPlan) -> list[Excluded]:
    if not sweep.runs_dir.is_dir():
        return []
    keys = set(plan.keys())
    return [Excluded(key=p.name, role=None, status="unplanned", reason="a folder the plan does not name")
            for p in sorted(sweep.runs_dir.iterdir()) if p.is_dir() and p.name not in keys]


def _cell(run: PlannedRun | SweepPoint) -> tuple[float, float, int]:
    return (float(run.budget or 0.0), float(run.target_params), int(run.seed))


def _best_per_cell(points: list[SweepPoint], plan: SweepPlan) -> tuple[list[SweepPoint], list[LrCell]]:
    planned: dict[tuple, list[PlannedRun]] = {}
    for r in plan.runs:
        if is_cell(r):
            planned.setdefault(_cell(r), []).append(r)
    by_cell: dict[tuple, list[SweepPoint]] = {}
    for p in points:
        by_cell.setdefault(_cell(p), []).append(p)
    best = [min(cell, key=lambda p: p.loss) for cell in by_cell.values()]
    if all(len({r.lr_multiplier for r in runs}) < 2 for runs in planned.values()):
        return best, []
    cells = []
    for cell, winner in zip(by_cell, best, strict=True):
        runs = sorted(planned[cell], key=lambda r: r.lr_multiplier)
        loss = {p.key: p.loss for p in by_cell[cell]}
        multipliers = [float(r.lr_multiplier) for r in runs]
        i = multipliers.index(winner.lr_multiplier)
        cells.append(LrCell(budget=cell[0], target_params=cell[1], seed=cell[2], multipliers=multipliers,
                            losses=[loss.get(r.key) for r in runs], keys=[r.key for r in runs], best_key=winner.key,
                            best_multiplier=winner.lr_multiplier, best_index=i,
                            edge_distance=min(i, len(runs) - 1 - i), at_low_edge=i == 0,
                            at_high_edge=i == len(runs) - 1))
    return best, cells
