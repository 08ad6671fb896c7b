"""Resolve an ExperimentConfig into a RunPlan: steps, batch split, parameter counts, FLOPs.

Pure arithmetic over the config (no data, no model): `isoflop info` and `train --dry-run` print it, and the
run directory records it before any compute.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from isoflop.config import ConfigError
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.train.spec import ExperimentConfig


@dataclass(frozen=True)
class RunPlan:
    steps: int
    """Optimizer steps."""
    world_size: int
    global_batch: int
    """Sequences per optimizer step over all ranks."""
    micro_batch: int
    """Sequences per forward pass on one rank."""
    grad_accum: int
    """Micro-batches per optimizer step on one rank."""
    seq_len: int
    tokens_per_step: int
    tokens: int
    """Training tokens over the whole run."""
    flops_per_token: int
    """Training (forward + backward) FLOPs per token."""
    flops: float
    """Training FLOPs over the whole run: tokens * flops_per_token."""
    params: dict[str, int]
    warmup_steps: int
    horizon_unit: str

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_plan(cfg: ExperimentConfig, world_size: int = 1) -> RunPlan:
    """The plan of `cfg` on `world_size` data-parallel ranks; ConfigError when the batch does not split, the
    warmup does not fit the steps (schedule.warmup_steps) or a checkpoint.at step is past them."""
    t = cfg.train
    model = cfg.resolved_model
    seq_len = cfg.data.seq_len
    if t.batch_size % world_size:
        raise ConfigError("train.batch_size", f"{t.batch_size} does not split over {world_size} ranks")
    per_rank = t.batch_size // world_size
    micro = t.micro_batch_size or per_rank
    if micro > per_rank or per_rank % micro:
        raise ConfigError("train.micro_batch_size",
                          f"{micro} does not divide the per-rank batch {per_rank} (batch_size / ranks)")
    groups = param_groups(model)
    per_token = flops_per_token(model, seq_len).training
    tokens_per_step = t.batch_size * seq_len

    h = t.horizon
    if h.steps is not None:
        steps = h.steps
    elif h.tokens is not None:
        steps = math.ceil(h.tokens / tokens_per_step)
    elif h.flops is not None:
        steps = math.ceil(h.flops / (per_token * tokens_per_step))
    else:
        assert h.tokens_per_param is not None
        steps = math.ceil(h.tokens_per_param * groups.total / tokens_per_step)
    steps = max(steps, 1)
    try:
        cfg.schedule.check(steps)
    except ConfigError as e:
        raise e.under("schedule") from None
    past = [s for s in cfg.checkpoint.at if s > steps]
    if past:
        raise ConfigError("checkpoint.at", f"step {past[0]} is past the run's {steps} steps")
    tokens = steps * tokens_per_step
    return RunPlan(
        steps=steps, world_size=world_size, global_batch=t.batch_size, micro_batch=micro,
        grad_accum=per_rank // micro, seq_len=seq_len, tokens_per_step=tokens_per_step, tokens=tokens,
        flops_per_token=per_token, flops=float(tokens) * per_token, params=groups.to_dict(),
        warmup_steps=cfg.schedule.warmup_length(steps), horizon_unit=h.unit,
    )


def describe(plan: RunPlan) -> str:
    """A few human lines for the console."""
    p = plan.params
    return "\n".join([
        f"params    total {p['total']:,}  embedding {p['embedding']:,}  non-embedding {p['non_embedding']:,}"
        f"  active {p['active']:,}",
        f"batch     {plan.global_batch} seq x {plan.seq_len} tokens = {plan.tokens_per_step:,} tokens/step"
        f"  (micro {plan.micro_batch} x accum {plan.grad_accum} x ranks {plan.world_size})",
        f"horizon   {plan.steps:,} steps = {plan.tokens:,} tokens = {plan.flops:.3g} FLOPs"
        f"  ({plan.flops_per_token:,} FLOPs/token; {plan.tokens / p['total']:.2f} tokens/param)",
    ])
