"""The runs of a sweep spec: `design(spec, spec_dir) -> SweepPlan`.

Sizes. One geometric ladder N_k = N_ref·spread^k serves every budget (N_ref: the prior law's N_opt at the
smallest budget); each budget takes the `sizes` consecutive rungs whose geometric middle is nearest the prior's
N_opt(C). So a size recurs across budgets, the same (budget, size) cells exist in both modes, and fork mode
needs one trunk per ladder size. An explicit list of sizes gives every budget all of them. Each size becomes a
shape by science.shape.model_shape (the engine's own counting) with the base's vocabulary and tied embeddings.

Horizon. steps = round(C / (flops_per_token · batch · seq_len)) with the engine's counted training FLOPs per
token, so each run's counted FLOPs are within 1 % (MAX_MISS) of its budget; where rounding misses that (a
horizon of fewer than ~50 steps) the batch moves to the nearest one that lands, and a budget below one step
is refused. 6·N·D is recorded beside it.

Modes. grid: one run per cell, each with the rule's lr and batch at its own budget and the base's schedule.
fork (Hägele et al. 2024, §5): per size, one warmup-stable-decay trunk trained to the largest budget that uses
the size (it is that cell's run) and, for every other budget, a fork that loads the trunk's checkpoint at
S_b - round(cooldown·S_b) (weights, optimizer, data position) and runs the cooldown to S_b. Trunk and forks
share one absolute warmup, one batch and one lr (the rule's at the trunk's budget), so a fork is the WSD run of
its own length. Both modes' FLOP bills are computed on the same cells.

Keys. A readable prefix and 8 hex digits of sha256 of the run's resolved config as JSON with sorted keys (a
fork's starting point included), so the same config plans to the same folder.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isoflop.config import apply_overrides
from isoflop.errors import ConfigError
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.recipes import CONFIG_SUFFIXES, experiment_data
from isoflop.sweep.hparams import round_batch
from isoflop.sweep.plan import InitPoint, PlannedRun, SweepPlan
from isoflop.sweep.spec import SweepSpec
from isoflop.train.spec import CheckpointConfig, ExperimentConfig

MAX_MISS = 0.01
"""The largest |counted FLOPs / budget - 1| of a planned run (the issue's 1 %)."""
CHECKPOINTS_PER_RUN = 4
"""checkpoint.every = steps / this: a killed run loses at most a quarter of itself, for four saves."""
HASH_CHARS = 8
BATCH_SEARCH = 4
"""Batches up to this times the rule's are tried when rounding the horizon misses MAX_MISS."""

# keys the sweep sets per run: a `set` override of one would be silently overwritten, so it is refused
_PER_RUN = ("model.d_model", "model.n_layers", "model.n_heads", "model.n_kv_heads", "model.ffn_hidden",
            "train.horizon", "train.batch_size", "train.seed", "optim.lr", "eval.every", "checkpoint.every",
            "checkpoint.at")


@dataclass(frozen=True)
class _Size:
    """One size of the sweep as a model: the run config's model table and its counts."""

    target: float
    shape: dict[str, Any]
    model: dict[str, Any]
    params: dict[str, int]
    flops_per_token: int


# ----------------------------------------------------------------------------- public

def base_config(spec: SweepSpec, spec_dir: str | Path) -> ExperimentConfig:
    """The base every run starts from: `spec.base` (a recipe, or a config file relative to `spec_dir`) with the
    spec's `set` overrides applied."""
    return _Designer(spec, spec_dir).base


def design(spec: SweepSpec, spec_dir: str | Path) -> SweepPlan:
    """Every run of the spec's mode, and both modes' FLOP bills on the same cells (module docstring); the other
    mode's bill is left out where that mode cannot be planned (e.g. a fork's cooldown inside its warmup)."""
    d = _Designer(spec, spec_dir)
    modes = {"grid": d.grid_runs, "fork": d.fork_runs}
    runs = modes.pop(spec.mode)()
    _check_distinct(runs)
    bills = {spec.mode: sum(r.bill_flops for r in runs)}
    for other, make in modes.items():
        try:  # the other mode's bill, where that mode can be planned (fork mode has constraints of its own)
            bills[other] = sum(r.bill_flops for r in make())
        except ConfigError:
            pass
    return SweepPlan(mode=spec.mode, budgets=sorted(spec.budgets), runs=runs,
                     bills={m: bills[m] for m in ("grid", "fork") if m in bills}, spec=spec.to_dict())


def rung_run(spec: SweepSpec, spec_dir: str | Path, n_params: float, budget: float, key_prefix: str = "rung", *,
             lr_multiplier: float = 1.0, seed: int | None = None) -> PlannedRun:
    """A grid-mode-style run of `n_params` total parameters (its own shape, off the ladder) at `budget`
    FLOPs, role "rung": what `sweep predict` trains. ConfigError naming `n_params` or `budget`."""
    if not (math.isfinite(budget) and budget > 0):
        raise ConfigError("budget", f"must be positive finite FLOPs, got {budget}")
    d = _Designer(spec, spec_dir)
    size = d.size(float(n_params), key="n_params")
    return d.cell(size, budget, lr_multiplier, spec.seeds[0] if seed is None else seed, role="rung",
                  prefix=key_prefix, key="budget")


def ladder(spec: SweepSpec) -> dict[float, list[float]]:
    """The sizes (total parameters) of each budget, smallest first (module docstring)."""
    return {c: [n for _, n in sizes] for c, sizes in _windows(spec).items()}


# ----------------------------------------------------------------------------- sizes

def _windows(spec: SweepSpec) -> dict[float, list[tuple[int, float]]]:
    """budget -> [(ladder index, N)]: the index identifies a size across budgets."""
    budgets = sorted(spec.budgets)
    if not isinstance(spec.sizes, int):
        explicit = sorted(enumerate(float(n) for n in spec.sizes), key=lambda p: p[1])
        return {c: explicit for c in budgets}
    from isoflop.science.compute_optimal import compute_optimal
    from isoflop.science.errors import ScienceError
    from isoflop.science.laws import PRESETS

    law = PRESETS.get(spec.prior, key="prior")
    try:
        n_opt = {c: compute_optimal(law, c).N_opt for c in budgets}
    except ScienceError as e:
        raise ConfigError("prior", f"{spec.prior} gives no N_opt for these budgets: {e.problem}") from None
    n_ref, step, k = n_opt[budgets[0]], math.log(spec.spread), spec.sizes
    out = {}
    for c in budgets:
        # the window whose middle is nearest N_opt (floor(x + 0.5): ties always go up, unlike round's to-even)
        start = math.floor(math.log(n_opt[c] / n_ref) / step - (k - 1) / 2 + 0.5)
        out[c] = [(j, n_ref * spec.spread ** j) for j in range(start, start + k)]
    return out


# ----------------------------------------------------------------------------- the designer

class _Designer:
    def __init__(self, spec: SweepSpec, spec_dir: str | Path):
        self.spec = spec
        self.spec_dir = Path(spec_dir)
        self.base_dict, self.base = self._load_base()
        self.seq_len = self.base.data.seq_len
        self.multiple = self.base.train.micro_batch_size or 1
        self._sizes: dict[float, _Size] = {}

    def _load_base(self) -> tuple[dict[str, Any], ExperimentConfig]:
        spec = self.spec
        path = self.spec_dir / spec.base
        target: str | Path = path if (Path(spec.base).suffix in CONFIG_SUFFIXES or path.is_file()) else spec.base
        try:
            data = experiment_data(target)
        except ConfigError as e:
            raise ConfigError("base", str(e)) from None
        for item in spec.set:
            key = item.partition("=")[0].strip()
            if any(key == k or key.startswith(k + ".") for k in _PER_RUN):
                raise ConfigError("set", f"{key} is chosen per run by the sweep (see docs/sweeps.md)")
            if spec.mode == "fork" and (key == "schedule" or key.startswith("schedule.")):
                raise ConfigError("set", f"{key}: fork mode's schedule is WSD, set by cooldown, cooldown_shape "
                                         "and warmup_steps")
        try:
            data = apply_overrides(data, spec.set, ExperimentConfig)
            cfg = ExperimentConfig.from_dict(data)
        except ConfigError as e:
            raise e.under("set" if spec.set else "base") from None
        return cfg.to_dict(), cfg

    # ------------------------------------------------------------------ one size
    def size(self, n: float, key: str = "sizes") -> _Size:
        if n not in self._sizes:
            self._sizes[n] = self._make_size(n, key)
        return self._sizes[n]

    def _make_size(self, n: float, key: str) -> _Size:
        from isoflop.science.errors import ScienceError
        from isoflop.science.shape import model_shape

        m, s = self.base.resolved_model, self.spec.shape
        try:
            shape = model_shape(n, vocab_size=m.vocab_size, tie_embeddings=m.tie_embeddings,
                                head_dim=s.head_dim or m.head_dim, aspect=s.aspect,
                                kv_ratio=s.kv_ratio or max(1, m.n_heads // m.kv_heads), tolerance=s.tolerance)
        except ScienceError as e:
            raise ConfigError(key, f"no shape for N = {n:.4g}: {e.problem}") from None
        c = shape.config
        model = {**self.base_dict["model"], "d_model": c.d_model, "n_layers": c.n_layers, "n_heads": c.n_heads,
                 "n_kv_heads": c.kv_heads, "ffn_hidden": None}  # None: the engine's FFN rule, as model_shape counts
        probe = copy.deepcopy(self.base_dict)
        probe["model"] = model
        resolved = _experiment(probe, key).resolved_model
        return _Size(target=float(n), shape=shape.to_dict(), model=model, params=param_groups(resolved).to_dict(),
                     flops_per_token=flops_per_token(resolved, self.seq_len).training)

    # ------------------------------------------------------------------ horizons
    def horizon(self, size: _Size, budgets: list[float], batch: int, key: str = "budgets") -> tuple[int, list[int]]:
        """(batch, steps per budget): the batch nearest `batch` (a multiple of the micro batch) at which every
        budget's whole steps land within MAX_MISS of it."""
        per_seq = size.flops_per_token * self.seq_len
        k0 = batch // self.multiple
        for k in sorted(range(1, BATCH_SEARCH * k0 + 1), key=lambda k: (abs(math.log(k / k0)), k)):
            b = k * self.multiple
            steps = [round(c / (per_seq * b)) for c in budgets]
            if all(s >= 1 and abs(s * per_seq * b / c - 1) <= MAX_MISS for s, c in zip(steps, budgets, strict=True)):
                return b, steps
        c = min(budgets)
        n = f"N = {size.target:.4g} ({size.params['total']:,} counted)"
        if c < per_seq * self.multiple:
            raise ConfigError(key, f"{c:.4g} FLOPs is less than one optimizer step of the {n} model "
                                   f"({per_seq * self.multiple:.4g} FLOPs for {self.multiple} sequence(s) of "
                                   f"{self.seq_len} tokens)")
        raise ConfigError(key, f"{c:.4g} FLOPs is {c / per_seq:.1f} sequences of the {n} model: too few for whole "
                               f"steps to land within {MAX_MISS:.0%} of the budget")

    def hparams(self, size: _Size, flops: float) -> tuple[float, int]:
        """(lr, batch in sequences) of the rule for `size` at `flops`, the batch rounded (hparams.round_batch)."""
        hp = self.spec.hparams.choose(n_params=size.params["total"], flops=flops, base_lr=self.base.optim.lr,
                                      base_batch=self.base.train.batch_size, seq_len=self.seq_len)
        return hp.lr, round_batch(hp.batch, self.seq_len, self.multiple)

    # ------------------------------------------------------------------ runs
    def config(self, size: _Size, steps: int, batch: int, lr: float, seed: int,
               schedule: dict[str, Any] | None = None, at: list[int] | None = None) -> dict[str, Any]:
        d = copy.deepcopy(self.base_dict)
        d["model"] = copy.deepcopy(size.model)
        d["train"].update(horizon={"steps": steps}, batch_size=batch, seed=seed)
        d["optim"]["lr"] = lr
        d["eval"]["every"] = max(1, steps // self.spec.evals)
        d["checkpoint"]["every"] = max(1, math.ceil(steps / CHECKPOINTS_PER_RUN))
        if schedule is not None:
            d["schedule"] = schedule
        elif self.spec.warmup_steps is not None:
            d["schedule"].update(warmup=0.0, warmup_steps=self.spec.warmup_steps)
        if at is not None:
            d["checkpoint"]["at"] = sorted(at)
        return d

    def planned(self, *, role: str, prefix: str, budget: float, size: _Size, steps: int, batch: int, lr: float,
                multiplier: float, seed: int, config: dict[str, Any], init: InitPoint | None = None,
                bill_steps: int | None = None, key: str = "budgets") -> PlannedRun:
        config = _resolve(config, key)
        tokens = steps * batch * self.seq_len
        flops = float(tokens * size.flops_per_token)
        bill = flops if bill_steps is None else float(bill_steps * batch * self.seq_len * size.flops_per_token)
        name = f"{prefix + '-' if prefix else ''}C{_fmt_flops(budget)}-N{_fmt_n(size.target)}-lr{multiplier:g}x-s{seed}"
        return PlannedRun(key=f"{name}-{_digest(config, init)}", role=role, budget=budget, target_params=size.target,
                          shape=size.shape, params=size.params, steps=steps, tokens=tokens,
                          flops_per_token=size.flops_per_token, flops=flops,
                          flops_6nd=6.0 * size.params["total"] * tokens, bill_flops=bill, lr=lr, batch_size=batch,
                          lr_multiplier=multiplier, seed=seed, config=config, init_from=init,
                          est_time_s=bill / self.spec.throughput)

    def cell(self, size: _Size, budget: float, multiplier: float, seed: int, *, role: str = "grid",
             prefix: str = "", key: str = "budgets") -> PlannedRun:
        """One run trained from scratch with the base's schedule at the rule's lr and batch for `budget`."""
        lr, batch = self.hparams(size, budget)
        batch, (steps,) = self.horizon(size, [budget], batch, key)
        warmup = self.spec.warmup_steps
        if warmup is not None and warmup >= steps:
            raise ConfigError("warmup_steps", f"{warmup} warmup steps do not fit the N = {size.target:.4g} run at "
                                              f"{budget:.4g} FLOPs ({steps} steps)")
        lr *= multiplier
        return self.planned(role=role, prefix=prefix, budget=budget, size=size, steps=steps, batch=batch, lr=lr,
                            multiplier=multiplier, seed=seed, config=self.config(size, steps, batch, lr, seed),
                            key=key)

    def grid_runs(self) -> list[PlannedRun]:
        spec = self.spec
        return [self.cell(self.size(n), c, m, seed)
                for c, sizes in _windows(spec).items() for _, n in sizes for m in spec.lr_grid for seed in spec.seeds]

    def fork_runs(self) -> list[PlannedRun]:
        spec = self.spec
        by_size: dict[int, tuple[float, list[float]]] = {}
        for c, sizes in _windows(spec).items():
            for j, n in sizes:
                by_size.setdefault(j, (n, []))[1].append(c)
        runs: list[PlannedRun] = []
        for j in sorted(by_size, key=lambda j: by_size[j][0]):
            n, budgets = by_size[j]
            budgets = sorted(budgets)
            size = self.size(n)
            lr, batch = self.hparams(size, budgets[-1])
            batch, steps = self.horizon(size, budgets, batch)
            total = steps[-1]
            warmup = self.warmup(total)
            points = {c: s - max(1, round(spec.cooldown * s)) for c, s in zip(budgets[:-1], steps, strict=False)}
            for c, p in [*points.items(), (budgets[-1], total - max(1, round(spec.cooldown * total)))]:
                if p < warmup:
                    raise ConfigError("warmup_steps", f"the N = {n:.4g} run at {c:.4g} FLOPs starts its cooldown at "
                                                      f"step {p}, inside the {warmup}-step warmup")
            schedule = {"kind": "wsd", "warmup": 0.0, "warmup_steps": warmup, "decay": spec.cooldown,
                        "shape": spec.cooldown_shape, "floor": 0.0}
            for m in spec.lr_grid:
                for seed in spec.seeds:
                    cfg = self.config(size, total, batch, lr * m, seed, schedule, at=sorted(set(points.values())))
                    trunk = self.planned(role="trunk", prefix="trunk", budget=budgets[-1], size=size, steps=total,
                                         batch=batch, lr=lr * m, multiplier=m, seed=seed, config=cfg)
                    runs.append(trunk)
                    for (c, p), s in zip(points.items(), steps, strict=False):
                        runs.append(self.planned(
                            role="fork", prefix="fork", budget=c, size=size, steps=s, batch=batch, lr=lr * m,
                            multiplier=m, seed=seed, config=self.config(size, s, batch, lr * m, seed, schedule),
                            init=InitPoint(key=trunk.key, step=p), bill_steps=s - p))
        return runs

    def warmup(self, total_steps: int) -> int:
        """Fork mode's absolute warmup: the spec's, or the base schedule's fraction of the trunk's steps."""
        if self.spec.warmup_steps is not None:
            return self.spec.warmup_steps
        own = self.base_dict["schedule"].get("warmup_steps")
        return own if own is not None else round(self.base.schedule.warmup * total_steps)


# ----------------------------------------------------------------------------- helpers

def _trainer_knows(cls: type, name: str) -> bool:
    return name in {f.name for f in dataclasses.fields(cls)}


def _experiment(d: dict[str, Any], key: str) -> ExperimentConfig:
    """The ExperimentConfig of a run's dict. Until the trainer's ScheduleConfig.warmup_steps and
    CheckpointConfig.at exist, a dict using them is built without them (the counts do not depend on either)."""
    from isoflop.optim.schedules import ScheduleConfig

    d = copy.deepcopy(d)
    if not _trainer_knows(ScheduleConfig, "warmup_steps") and "warmup_steps" in d["schedule"]:
        d["schedule"].pop("warmup_steps")
        d["schedule"]["warmup"] = 0.0
    if not _trainer_knows(CheckpointConfig, "at"):
        d["checkpoint"].pop("at", None)
    try:
        return ExperimentConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(key, f"a run's config does not build: {e}") from None


def _resolve(d: dict[str, Any], key: str) -> dict[str, Any]:
    """The run's config as the trainer reads it (defaults filled in, validated). Keys the trainer does not know
    yet (see _experiment) stay as written."""
    out = _experiment(d, key).to_dict()
    if "warmup_steps" in d["schedule"] and "warmup_steps" not in out["schedule"]:
        out["schedule"].update(warmup=d["schedule"]["warmup"], warmup_steps=d["schedule"]["warmup_steps"])
    if "at" in d["checkpoint"] and "at" not in out["checkpoint"]:
        out["checkpoint"]["at"] = d["checkpoint"]["at"]
    return out


def _digest(config: dict[str, Any], init: InitPoint | None) -> str:
    payload: Any = config if init is None else {"config": config, "init_from": dataclasses.asdict(init)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _check_distinct(runs: list[PlannedRun]) -> None:
    seen: dict[str, PlannedRun] = {}
    for r in runs:
        if r.key in seen:
            raise ConfigError("budgets", f"budgets {seen[r.key].budget:.4g} and {r.budget:.4g} give the N = "
                                         f"{r.target_params:.4g} run the same horizon ({r.steps} steps)")
        seen[r.key] = r


def _fmt_flops(c: float) -> str:
    return f"{c:.3g}".replace("e+", "e")


def _fmt_n(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"
