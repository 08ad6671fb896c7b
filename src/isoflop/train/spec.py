"""ExperimentConfig: everything a run needs = model + data + train (horizon) + optim + schedule + eval +
checkpoint + log. Its dict form is what a run directory's config holds and `--set` edits."""

from __future__ import annotations

from dataclasses import field, replace
from typing import Literal

from isoflop.config import Config, config, require
from isoflop.data.config import DataConfig
from isoflop.nn.config import ModelConfig
from isoflop.optim.config import AdamWConfig, OptimConfig
from isoflop.optim.schedules import CosineSchedule, ScheduleConfig

#: Vocabulary rows are padded to a multiple of this when model.vocab_size is left to the tokenizer
#: (matmul-friendly shapes; nanoGPT pads GPT-2's 50257 to 50304 for the same reason).
VOCAB_MULTIPLE = 64


@config
class HorizonConfig(Config):
    """How long to train: exactly one of the four."""

    steps: int | None = None
    """Optimizer steps."""
    tokens: int | None = None
    """Training tokens (rounded up to whole steps)."""
    flops: float | None = None
    """Training FLOPs by isoflop's counting convention (rounded up to whole steps)."""
    tokens_per_param: float | None = None
    """Tokens as a multiple of the model's total parameters (Chinchilla-optimal is about 20)."""

    def __post_init__(self) -> None:
        given = [k for k in ("steps", "tokens", "flops", "tokens_per_param") if getattr(self, k) is not None]
        require(len(given) == 1, "", f"set exactly one of steps, tokens, flops, tokens_per_param (got {given or 'none'})")
        value = getattr(self, given[0])
        require(value > 0, given[0], f"must be positive, got {value}")

    @property
    def unit(self) -> str:
        return next(k for k in ("steps", "tokens", "flops", "tokens_per_param") if getattr(self, k) is not None)


@config
class TrainConfig(Config):
    horizon: HorizonConfig = field(default_factory=lambda: HorizonConfig(steps=100))
    """Training length."""
    batch_size: int = 32
    """Sequences per optimizer step, over all ranks (the global batch)."""
    micro_batch_size: int | None = None
    """Sequences per forward pass on one rank; the rest is gradient accumulation. None: batch_size / ranks."""
    seed: int = 0
    """Seeds the initialisation and the data order."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast (weights and optimizer state stay fp32)."""
    compile: bool = False
    """torch.compile the model."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this; None: no clipping."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism under torchrun: DDP, or FSDP2 (fully_shard) which also shards weights and state."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda'."""

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size", f"must be positive, got {self.batch_size}")
        require(self.micro_batch_size is None or 0 < self.micro_batch_size <= self.batch_size,
                "micro_batch_size", f"must be in 1 .. batch_size={self.batch_size}, got {self.micro_batch_size}")
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be positive, got {self.grad_clip}")


@config
class EvalConfig(Config):
    every: int = 0
    """Evaluate on the validation split every this many steps (0: only at the end)."""
    batches: int = 20
    """Validation batches per evaluation (of train.micro_batch_size sequences)."""
    also: list[str] = field(default_factory=list)
    """More corpora (paths, or "stdlib") whose validation split is scored at each evaluation with the run's
    tokenizer, logged as `val_loss@<name>` (lifelong expansion tracks the old data's loss this way)."""

    def __post_init__(self) -> None:
        require(self.every >= 0, "every", f"must be non-negative, got {self.every}")
        require(self.batches > 0, "batches", f"must be positive, got {self.batches}")


@config
class DistillConfig(Config):
    """Output-level knowledge distillation against a fixed teacher run (Lifelong-MoE, Chen et al. 2023):
    loss = LM loss + weight * KL(teacher || student) per token, at temperature 1."""

    teacher: str | None = None
    """Run directory whose final model is the teacher. None: no distillation."""
    weight: float = 0.0
    """lambda: weight of the KL term (0 trains on the plain LM loss and never runs the teacher)."""

    def __post_init__(self) -> None:
        require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        require(self.weight == 0 or self.teacher is not None, "teacher", "weight > 0 needs a teacher run")

    @property
    def active(self) -> bool:
        return self.teacher is not None and self.weight > 0


@config
class CheckpointConfig(Config):
    every: int = 0
    """Save a checkpoint every this many steps (0: only at the end)."""
    keep: int = 2
    """Keep the newest this many step checkpoints (those of `at` not counted: they are always kept)."""
    at: list[int] = field(default_factory=list)
    """Also checkpoint at these steps, and never prune them (a WSD trunk keeps its fork points so)."""

    def __post_init__(self) -> None:
        require(self.every >= 0, "every", f"must be non-negative, got {self.every}")
        require(self.keep >= 1, "keep", f"must be at least 1, got {self.keep}")
        bad = [s for s in self.at if isinstance(s, bool) or not isinstance(s, int) or s <= 0]
        require(not bad, "at", f"must be positive step numbers, got {bad[0] if bad else None!r}")

    def saves_at(self, step: int) -> bool:
        """Whether a step checkpoint is due after `step` (every `every`, and at each of `at`)."""
        return (self.every > 0 and step % self.every == 0) or step in self.at


@config
class LogConfig(Config):
    every: int = 10
    """Write a metrics-log record and a progress line every this many steps."""
    tensorboard: bool = False
    """Also write TensorBoard events under DIR/tb (needs `pip install 'isoflop[tb]'`)."""
    peak_flops: float | None = None
    """Peak FLOP/s of one device (e.g. 989e12 for an H100 SXM in dense bf16); when set, each record has
    `mfu` = achieved training FLOP/s (isoflop's counting) / (peak_flops * ranks)."""

    def __post_init__(self) -> None:
        require(self.every > 0, "every", f"must be positive, got {self.every}")
        require(self.peak_flops is None or self.peak_flops > 0, "peak_flops",
                f"must be positive, got {self.peak_flops}")


@config
class ExperimentConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpus, tokenizer, sequence length."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Horizon, batch, precision, parallelism."""
    optim: OptimConfig = field(default_factory=AdamWConfig)
    """The optimizer."""
    schedule: ScheduleConfig = field(default_factory=CosineSchedule)
    """The learning-rate schedule."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Validation."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints."""
    log: LogConfig = field(default_factory=LogConfig)
    """Metrics and console output."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Knowledge distillation against a teacher run (off by default)."""

    def __post_init__(self) -> None:
        tok_vocab = self.data.tokenizer.vocab_size
        require(self.model.vocab_size is None or self.model.vocab_size >= tok_vocab, "model.vocab_size",
                f"{self.model.vocab_size} is smaller than the tokenizer's vocabulary ({tok_vocab})")

    @property
    def resolved_model(self) -> ModelConfig:
        """The model config with vocab_size resolved (as given, or the tokenizer's padded to VOCAB_MULTIPLE) and
        train_length resolved (as given, or data.seq_len)."""
        model = self.model
        if model.train_length is None:
            model = replace(model, train_length=self.data.seq_len)
        if model.vocab_size is not None:
            return model
        padded = -(-self.data.tokenizer.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
        return replace(model, vocab_size=padded)
