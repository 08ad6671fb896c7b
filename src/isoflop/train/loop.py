"""The training loop: for each step, accumulate micro-batch gradients, clip, step, report.

Everything else (building, data, checkpoint files, run records) is set up by run.py and passed in as
callbacks, so this file stays the part a reader needs to see.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.train import parallel
from isoflop.train.evaluate import autocast
from isoflop.train.plan import RunPlan


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, loss: float):
        self.step = step
        super().__init__(f"loss became {loss} at step {step}; stopped (the last good checkpoint is kept)")


@dataclass
class LoopCallbacks:
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    """This rank's share of the next global batch: (inputs, targets) of shape (B_rank, T)."""
    lr_at: Callable[[int], float]
    """Learning rate for the 0-based step index."""
    on_step: Callable[[dict[str, Any]], None]
    """Called after each optimizer step with that step's record (step counts completed steps)."""
    after_step: Callable[[int, float], None]
    """Called after on_step with the completed step count and the training seconds so far: evaluation and
    checkpoints when due. Its own time is not training time: `elapsed_s` and `tokens_per_s` leave it out."""
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    """(inputs_BT, logits_BTV) -> a scalar added to the loss (distillation); logged as `extra_loss`."""


def train_loop(model: nn.Module, optimizer: torch.optim.Optimizer, plan: RunPlan, *, start_step: int,
               grad_clip: float | None, precision: str, ctx: parallel.DistContext,
               callbacks: LoopCallbacks, elapsed_s: float = 0.0, log_every: int = 1) -> float:
    """Run steps start_step .. plan.steps - 1; return the training seconds spent (steps and their logging, not
    after_step's evaluations and checkpoints), including `elapsed_s` before."""
    params = [p for p in model.parameters() if p.requires_grad]
    core = parallel.unwrap(model)  # the TransformerLM: its routed modules report aux losses and stats
    model.train()
    last_log = time.perf_counter()
    tokens_since_log = 0
    for step in range(start_step, plan.steps):
        lr = callbacks.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs_BT, targets_BT = callbacks.next_batch()
        loss_sum = torch.zeros((), device=ctx.device)
        aux_sum = torch.zeros((), device=ctx.device)
        extra_sum = torch.zeros((), device=ctx.device)
        logs = (step + 1) % log_every == 0 or step + 1 == plan.steps
        stats_sum: dict[str, float] = {}  # routed modules' stats, summed over micro-batches on logged steps
        for micro, (x_BT, y_BT) in enumerate(zip(inputs_BT.chunk(plan.grad_accum), targets_BT.chunk(plan.grad_accum), strict=True)):
            x_BT, y_BT = x_BT.to(ctx.device, non_blocking=True), y_BT.to(ctx.device, non_blocking=True)
            with parallel.gradient_sync(model, micro == plan.grad_accum - 1), autocast(ctx.device, precision):
                logits_BTV = model(x_BT)
                loss = F.cross_entropy(logits_BTV.float().flatten(0, 1), y_BT.flatten()) / plan.grad_accum
                aux = core.aux_loss() if hasattr(core, "aux_loss") else None
                aux = aux / plan.grad_accum if aux is not None else None
                extra = callbacks.extra_loss(x_BT, logits_BTV) / plan.grad_accum if callbacks.extra_loss else None
                total = loss + (aux if aux is not None else 0.0) + (extra if extra is not None else 0.0)
                total.backward()
            if logs and hasattr(core, "routing_stats"):
                for key, value in core.routing_stats().items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + value
            if extra is not None:
                extra_sum += extra.detach()
            loss_sum += loss.detach()
            if aux is not None:
                aux_sum += aux.detach()
        max_norm = grad_clip if grad_clip is not None else math.inf
        grad_norm = parallel.local_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(core, "after_optimizer_step"):
            parallel.sum_across_ranks_(core.routing_load_buffers(), ctx)  # balance on the global load
            core.after_optimizer_step()

        loss_value = float(parallel.mean_across_ranks(loss_sum, ctx))
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(step + 1, loss_value)
        tokens_since_log += plan.tokens_per_step
        done = step + 1
        if logs:
            now = time.perf_counter()
            elapsed_s += now - last_log
            callbacks.on_step({
                "step": done, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                "tokens": done * plan.tokens_per_step, "flops": done * plan.tokens_per_step * plan.flops_per_token,
                "tokens_per_s": tokens_since_log / max(now - last_log, 1e-9), "elapsed_s": elapsed_s,
                **_routing_record(stats_sum, plan.grad_accum, aux_sum, ctx),
                **({"extra_loss": float(parallel.mean_across_ranks(extra_sum, ctx))} if callbacks.extra_loss else {}),
            })
            last_log, tokens_since_log = time.perf_counter(), 0
        paused = time.perf_counter()
        callbacks.after_step(done, elapsed_s + paused - last_log)
        last_log += time.perf_counter() - paused  # evaluation and checkpoints: not training time
    return elapsed_s


def _routing_record(stats_sum: dict[str, float], micro_batches: int, aux_sum: torch.Tensor,
                    ctx: parallel.DistContext) -> dict[str, Any]:
    """The aux loss of the step and the routed modules' stats averaged over its micro-batches (this rank's; a
    ratio such as load max/mean is averaged, not recomputed from summed loads); empty for dense models."""
    if not stats_sum and not aux_sum.item():
        return {}
    stats = {key: value / micro_batches for key, value in stats_sum.items()}
    return {"aux_loss": float(parallel.mean_across_ranks(aux_sum, ctx)), **stats}
