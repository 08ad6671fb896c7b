"""The per-run hyperparameter rule of a sweep: peak learning rate and batch for a model of N parameters trained
with C FLOPs. A variant family (`hparams.kind` in sweep.toml), like the optimizers and schedules.

    deepseek  (default) DeepSeek LLM's fit of the near-optimal lr and batch against compute
    porian    Porian et al. 2024's rounded fit against model size
    fixed     the base config's own lr and batch for every run

Units are the trap: published batch rules are in tokens (DeepSeek, OLMo-core, nanochat) or in sequences of the
paper's length (Porian: 2048 tokens; Marin: 4096). Every rule returns its batch as a `Batch`, which carries its
unit, and the only way to a run's `train.batch_size` (sequences of the run's own `data.seq_len`) is
`Batch.sequences(seq_len)`, so a token count is never read as a sequence count.

Rounding: the batch is rounded to the nearest whole number of sequences, at least one; when the base config
splits its batch into micro-batches (`train.micro_batch_size`), to the nearest multiple of that, at least one
micro-batch (`round_batch`). grid.py may move it further so that the horizon lands within 1 % of the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from isoflop.config import Variant, config, require
from isoflop.errors import ConfigError


@dataclass(frozen=True)
class Batch:
    """A batch size with its unit: `value` tokens, or `value` sequences of `seq_len` tokens each."""

    value: float
    unit: Literal["tokens", "sequences"]
    seq_len: int | None = None
    """The length of one sequence (required for unit="sequences": a sequence count means nothing without it)."""

    def __post_init__(self) -> None:
        if self.unit not in ("tokens", "sequences"):
            raise ConfigError("hparams", f"a batch unit is 'tokens' or 'sequences', got {self.unit!r}")
        if self.unit == "sequences" and not (isinstance(self.seq_len, int) and self.seq_len > 0):
            raise ConfigError("hparams", "a batch in sequences needs the sequence length they have")
        if not (math.isfinite(self.value) and self.value > 0):
            raise ConfigError("hparams", f"a batch must be a positive finite number, got {self.value}")

    @property
    def tokens(self) -> float:
        return self.value if self.unit == "tokens" else self.value * self.seq_len  # type: ignore[operator]

    def sequences(self, seq_len: int) -> float:
        """This batch in sequences of `seq_len` tokens (unrounded)."""
        if not (isinstance(seq_len, int) and seq_len > 0):
            raise ConfigError("data.seq_len", f"must be a positive integer, got {seq_len!r}")
        return self.tokens / seq_len


def round_batch(batch: Batch, seq_len: int, multiple: int = 1) -> int:
    """`batch` as a whole number of sequences of `seq_len`: the nearest multiple of `multiple`, at least one.

    Takes a `Batch` only: a bare number (whose unit nobody knows) is a programming error.
    """
    if not isinstance(batch, Batch):
        raise TypeError(f"round_batch takes a Batch (a value with its unit), got {type(batch).__name__}")
    if multiple < 1:
        raise ConfigError("train.micro_batch_size", f"must be positive, got {multiple}")
    return multiple * max(1, round(batch.sequences(seq_len) / multiple))


@dataclass(frozen=True)
class HParams:
    """What a rule chose for one run, before rounding."""

    lr: float
    """Peak learning rate."""
    batch: Batch
    """The batch with its unit as the rule gives it."""


@config
class HParamRule(Variant, family=True):
    """How a sweep picks each run's peak learning rate and batch."""

    default_kind = "deepseek"

    def choose(self, *, n_params: float, flops: float, base_lr: float, base_batch: int, seq_len: int) -> HParams:
        """The lr and batch of a run of `n_params` total parameters trained with `flops` counted FLOPs whose base
        config has `base_lr` and `base_batch` sequences of `seq_len` tokens."""
        raise NotImplementedError


@config
class DeepSeekRule(HParamRule):
    """DeepSeek LLM (arXiv 2401.02954, §3.1 eq. 1): η_opt = 0.3118·C^−0.1250, B_opt = 0.2920·C^0.3271, B in
    tokens and C in FLOPs, fitted on near-optimal runs from 1e17 to 2e19 FLOPs.

    DeepSeek's C is M·D with M the *non-embedding* training FLOPs per token (attention included); ours is the
    engine's counted total (embedding-side head included), as every budget of a sweep is. At small scale the
    two differ by up to ~50 % (sweeps_and_dynamics §7), i.e. a factor of 1.5^0.125 = 1.05 in lr and
    1.5^0.3271 = 1.14 in batch: inside the rule's own scatter, but this is an extrapolation far below 1e17.
    """

    kind = "deepseek"
    lr_coef: float = 0.3118
    """η_opt = lr_coef · C^lr_exp (DeepSeek eq. 1)."""
    lr_exp: float = -0.125
    """Exponent of C in η_opt (DeepSeek eq. 1)."""
    batch_coef: float = 0.2920
    """B_opt = batch_coef · C^batch_exp tokens (DeepSeek eq. 1)."""
    batch_exp: float = 0.3271
    """Exponent of C in B_opt (DeepSeek eq. 1)."""

    def __post_init__(self) -> None:
        require(self.lr_coef > 0, "lr_coef", f"must be positive, got {self.lr_coef}")
        require(self.batch_coef > 0, "batch_coef", f"must be positive, got {self.batch_coef}")

    def choose(self, *, n_params: float, flops: float, base_lr: float, base_batch: int, seq_len: int) -> HParams:
        return HParams(lr=self.lr_coef * flops ** self.lr_exp,
                       batch=Batch(self.batch_coef * flops ** self.batch_exp, "tokens"))


@config
class PorianRule(HParamRule):
    """Porian et al. 2024 (arXiv 2406.19146; formll/resolving-scaling-law-discrepancies @ 0dc60d9,
    plotting.py), their "rounded fit": B = 160·(N/108e6)^(2/3) sequences of 2048 tokens,
    LR = 0.0047·(N/108e6)^(−1/3), fitted on models of 2.5e7–1.1e8 parameters (AdamW, tuned β2).

    N here is the run's counted total parameters. OLMo-core's ladder reuses the rule (in tokens, 2048·B) with
    its lr halved for WSD; set `lr_coef = 0.00235` for that.
    """

    kind = "porian"
    n_ref: float = 108e6
    """The reference size of the fit (108M parameters)."""
    batch_coef: float = 160.0
    """Sequences of `batch_seq_len` tokens at N = n_ref."""
    batch_exp: float = 2.0 / 3.0
    """Exponent of N/n_ref in B."""
    batch_seq_len: int = 2048
    """Sequence length of the fit's batch unit (Porian's runs use 2048 tokens)."""
    lr_coef: float = 0.0047
    """Learning rate at N = n_ref."""
    lr_exp: float = -1.0 / 3.0
    """Exponent of N/n_ref in the learning rate."""

    def __post_init__(self) -> None:
        for key in ("n_ref", "batch_coef", "lr_coef"):
            require(getattr(self, key) > 0, key, f"must be positive, got {getattr(self, key)}")
        require(self.batch_seq_len > 0, "batch_seq_len", f"must be positive, got {self.batch_seq_len}")

    def choose(self, *, n_params: float, flops: float, base_lr: float, base_batch: int, seq_len: int) -> HParams:
        x = n_params / self.n_ref
        return HParams(lr=self.lr_coef * x ** self.lr_exp,
                       batch=Batch(self.batch_coef * x ** self.batch_exp, "sequences", self.batch_seq_len))


@config
class FixedRule(HParamRule):
    """The base config's `optim.lr` and `train.batch_size` for every run."""

    kind = "fixed"

    def choose(self, *, n_params: float, flops: float, base_lr: float, base_batch: int, seq_len: int) -> HParams:
        return HParams(lr=base_lr, batch=Batch(float(base_batch), "sequences", seq_len))
