"""sweep.toml: what a user asks of a sweep (SweepSpec), read strictly (`load_spec`).

The smallest spec is

    base = "tiny"
    budgets = [3e12, 1e13]
    sizes = 3
    mode = "grid"

and every other key has the default documented on its field below (docs/sweeps.md, "The spec", lists them).
Unknown keys, wrong types and out-of-range values are ConfigErrors naming the key; grid.py turns a spec into
the runs.
"""

from __future__ import annotations

import math
from dataclasses import field
from pathlib import Path
from typing import Literal

from isoflop.config import Config, config, require
from isoflop.errors import ConfigError
from isoflop.sweep.hparams import DeepSeekRule, HParamRule

DEFAULT_THROUGHPUT = 1.29e11
"""FLOP/s of the `tiny` recipe's training on the development machine (CPU-2, 2 cores, fp32): LOG.md 2026-12-07,
`isoflop train tiny` (7.73e12 counted FLOPs in 59.9 training seconds). Smaller models run at a lower rate
(0.33M parameters: 7.3e10), so estimates of the smallest runs are optimistic."""

DEFAULT_PRIOR = "hoffmann"
"""Hoffmann et al. 2022's published fit (eq. 10): at CPU-sized budgets (1e12-1e14 FLOPs) its N_opt is about
twice Epoch AI's re-fit's (D/N about 8 against 35), which keeps the smallest sizes of a small-vocabulary base
buildable (the embedding alone of `tiny` is 65k-131k parameters) and the token counts within small corpora."""


@config
class ShapeSpec(Config):
    """How a size becomes a model shape (science.shape.model_shape); vocabulary and tied embeddings are the
    base's."""

    aspect: float | None = None
    """Target d_model / n_layers. None: science.shape's rule (32 at 1e6 parameters, 64 at 1e8, 128 from 1e10)."""
    head_dim: int | None = None
    """Size of one attention head; d_model steps by it. None: the base model's (d_model / n_heads)."""
    kv_ratio: int | None = None
    """Query heads per key/value head (1: multi-head attention). None: the base model's n_heads / n_kv_heads."""
    tolerance: float = 0.05
    """A shape's counted total parameters must be within this fraction of the size asked for."""

    def __post_init__(self) -> None:
        require(self.aspect is None or (math.isfinite(self.aspect) and self.aspect > 0), "aspect",
                f"must be a positive number, got {self.aspect}")
        require(self.head_dim is None or self.head_dim > 0, "head_dim", f"must be positive, got {self.head_dim}")
        require(self.kv_ratio is None or self.kv_ratio > 0, "kv_ratio", f"must be positive, got {self.kv_ratio}")
        require(0 < self.tolerance < 1, "tolerance", f"must be a fraction in (0, 1), got {self.tolerance}")


@config
class SweepSpec(Config):
    """A sweep: budgets x sizes (x learning-rate multipliers x seeds) of one base config."""

    budgets: list[float]
    """Training budgets C in FLOPs as the engine counts them (forward + backward, attention included); each
    run's counted FLOPs are within 1 % of its budget. Required, at least one."""
    base: str = "tiny"
    """A recipe name, or a config file (.toml/.yaml/.json, which may itself name a `base` recipe) relative to the
    spec's folder: every run is this config with its own shape, horizon, batch, lr and seed."""
    sizes: int | list[float] = 5
    """An integer k: per budget, the k sizes of the sweep's geometric ladder centred on the prior law's N_opt(C).
    A list: these total parameter counts at every budget."""
    spread: float = 2.0
    """Ratio between neighbouring sizes of the ladder (2: five sizes span 16x, 1.2 decades, around N_opt)."""
    prior: str = DEFAULT_PRIOR
    """Law preset (isoflop.science.laws.PRESETS) whose N_opt(C) centres the sizes. Only the grid's placement
    depends on it; the sweep measures its own law."""
    mode: Literal["grid", "fork"] = "grid"
    """grid: one run per (budget, size). fork: one warmup-stable-decay run per size to its largest budget and a
    cooldown forked from its stable phase at every other budget (Hägele et al. 2024, §5)."""
    shape: ShapeSpec = field(default_factory=ShapeSpec)
    """The shape family ([shape] table)."""
    hparams: HParamRule = field(default_factory=DeepSeekRule)
    """Learning-rate and batch rule per run: "deepseek" (default), "porian" or "fixed" (sweep/hparams.py)."""
    lr_grid: list[float] = field(default_factory=lambda: [1.0])
    """Multipliers of the rule's learning rate: each cell is run at every one (the fit keeps the best per cell)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """train.seed of each repeat of every cell."""
    cooldown: float = 0.2
    """Fork mode: the WSD decay, as a fraction of each run's steps (about 20 % is where a longer cooldown stops
    paying, Hägele et al. 2024 §3.2, Fig. 5)."""
    cooldown_shape: Literal["linear", "sqrt"] = "sqrt"
    """Fork mode: the decay curve, linear or 1-sqrt (1-sqrt beats linear, Hägele et al. 2024 §3.2)."""
    warmup_steps: int | None = None
    """Warmup in optimizer steps for every run. None: grid mode keeps the base schedule's warmup fraction; fork mode
    takes that fraction of each trunk's steps (one absolute warmup shared by a trunk and its forks)."""
    set: list[str] = field(default_factory=list)
    """`--set`-style overrides (`"data.max_bytes=8000000"`) applied to the base before anything else."""
    evals: int = 8
    """Evaluations per run (eval.every = steps / evals): the curve points approach 1 reads."""
    throughput: float = DEFAULT_THROUGHPUT
    """Training FLOP/s assumed for est. time (default: the `tiny` recipe on the 2-core development CPU, LOG.md
    2026-12-07)."""

    def __post_init__(self) -> None:
        require(len(self.budgets) > 0, "budgets", "needs at least one budget")
        for b in self.budgets:
            require(math.isfinite(b) and b > 0, "budgets", f"must be positive finite FLOPs, got {b}")
        require(len(set(self.budgets)) == len(self.budgets), "budgets", f"has a budget twice: {self.budgets}")
        if isinstance(self.sizes, int):
            require(self.sizes >= 1, "sizes", f"a count must be at least 1, got {self.sizes}")
        else:
            require(len(self.sizes) > 0, "sizes", "an explicit list needs at least one size")
            for n in self.sizes:
                require(math.isfinite(n) and n > 0, "sizes", f"must be positive parameter counts, got {n}")
            require(len(set(self.sizes)) == len(self.sizes), "sizes", f"has a size twice: {self.sizes}")
        require(math.isfinite(self.spread) and self.spread > 1, "spread", f"must be > 1, got {self.spread}")
        from isoflop.science.laws import PRESETS

        if self.prior not in PRESETS:
            PRESETS.get(self.prior, key="prior")
        require(len(self.lr_grid) > 0, "lr_grid", "needs at least one multiplier")
        for m in self.lr_grid:
            require(math.isfinite(m) and m > 0, "lr_grid", f"multipliers must be positive, got {m}")
        require(len(set(self.lr_grid)) == len(self.lr_grid), "lr_grid", f"has a multiplier twice: {self.lr_grid}")
        require(len(self.seeds) > 0, "seeds", "needs at least one seed")
        require(all(s >= 0 for s in self.seeds), "seeds", f"must be non-negative, got {self.seeds}")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", f"has a seed twice: {self.seeds}")
        require(0 < self.cooldown < 1, "cooldown", f"must be a fraction in (0, 1), got {self.cooldown}")
        require(self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps",
                f"must be non-negative, got {self.warmup_steps}")
        require(self.evals >= 1, "evals", f"must be at least 1, got {self.evals}")
        require(math.isfinite(self.throughput) and self.throughput > 0, "throughput",
                f"must be positive FLOP/s, got {self.throughput}")


def load_spec(path: str | Path) -> SweepSpec:
    """The spec in the TOML file `path`; ConfigError naming the file (unreadable, not TOML) or the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such spec file")
    return parse_spec(path.read_text(), where=str(path))


def parse_spec(text: str, where: str = "the spec") -> SweepSpec:
    """The spec in TOML `text` (`where` names it in errors)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except Exception as e:  # any parse error: one line naming the file
        raise ConfigError(where, f"not a TOML table of sweep keys: {str(e).splitlines()[0]}") from None
    if "budgets" not in data:
        raise ConfigError("budgets", f"{where} must give the training budgets, e.g. budgets = [3e12, 1e13]")
    return SweepSpec.from_dict(data)
