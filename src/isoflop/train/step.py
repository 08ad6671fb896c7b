"""One optimizer step: accumulate the micro-batches' gradients, clip, update, and run the routed modules' rules.

The model is reached through the model-trainer contract (`nn.contract.TrainableLM`): its auxiliary loss joins
the LM loss, its routing stats are logged, and its selection biases move after the update on the load summed
over every rank.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.nn.contract import TrainableLM
from isoflop.train import parallel
from isoflop.train.evaluate import autocast

ExtraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(inputs_BT, logits_BTV) -> a scalar added to the loss (distillation), logged as `extra_loss`."""


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, loss: float):
        self.step = step
        super().__init__(f"loss became {loss} at step {step}; stopped (the last good checkpoint is kept)")


class Preempted(Exception):
    """A stop signal (SIGTERM, SIGUSR1; train/signals.py) arrived: step `step` was checkpointed and training
    stopped there, so `--resume` continues the run as if it had not stopped."""

    def __init__(self, step: int, signum: int | None = None):
        self.step, self.signum = step, signum
        name = signal.Signals(signum).name if signum is not None else "a stop signal"
        super().__init__(f"{name} received: checkpointed step {step} and stopped; --resume continues the run")


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step measured (losses are the mean over ranks)."""

    loss: float
    """The LM loss, mean over the step's tokens."""
    grad_norm: float
    """The global gradient norm before clipping."""
    logged: dict[str, float] = field(default_factory=dict)
    """On logged steps: `aux_loss` and the routing stats (mean over micro-batches), `extra_loss`; else empty."""


class OptimizerStep:
    """Call it with one rank's share of a global batch, shape (B_rank, T), and the step's learning rate."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, grad_accum: int,
                 grad_clip: float | None, precision: str, ctx: parallel.DistContext, extra_loss: ExtraLoss | None = None):
        self.model, self.optimizer = model, optimizer
        self.core = cast(TrainableLM, parallel.unwrap(model))  # the TransformerLM itself
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_accum, self.grad_clip, self.precision, self.ctx = grad_accum, grad_clip, precision, ctx
        self.extra_loss = extra_loss

    def __call__(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor, lr: float, *, log: bool) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        device = self.ctx.device
        loss_sum, aux_sum, extra_sum = (torch.zeros((), device=device) for _ in range(3))
        stats_sum: dict[str, float] = {}  # routed modules' stats, summed over micro-batches on logged steps
        micro_batches = zip(inputs_BT.chunk(self.grad_accum), targets_BT.chunk(self.grad_accum), strict=True)
        for micro, (x_BT, y_BT) in enumerate(micro_batches):
            loss, aux, extra = self._backward(x_BT.to(device, non_blocking=True), y_BT.to(device, non_blocking=True),
                                              sync=micro == self.grad_accum - 1)
            loss_sum += loss
            aux_sum += aux
            extra_sum += extra
            if log:
                for key, value in self.core.routing_stats().items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + value
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        grad_norm = parallel.local_tensor(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        parallel.sum_across_ranks_(self.core.routing_load_buffers(), self.ctx)  # balance on the global load
        self.core.after_optimizer_step()
        loss_value = float(parallel.mean_across_ranks(loss_sum, self.ctx))
        logged = self._logged(stats_sum, aux_sum, extra_sum) if log else {}
        return StepResult(loss=loss_value, grad_norm=float(grad_norm), logged=logged)

    def _backward(self, x_BT: torch.Tensor, y_BT: torch.Tensor, *, sync: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward of one micro-batch; its (LM, aux, extra) losses, detached, each / grad_accum."""
        zero = torch.zeros((), device=x_BT.device)
        with parallel.gradient_sync(self.model, sync), autocast(self.ctx.device, self.precision):
            logits_BTV = self.model(x_BT)
            loss = F.cross_entropy(logits_BTV.float().flatten(0, 1), y_BT.flatten()) / self.grad_accum
            aux = self.core.aux_loss()
            aux = aux / self.grad_accum if aux is not None else zero
            extra = self.extra_loss(x_BT, logits_BTV) / self.grad_accum if self.extra_loss is not None else zero
            (loss + aux + extra).backward()
        return loss.detach(), aux.detach(), extra.detach()

    def _logged(self, stats_sum: dict[str, float], aux_sum: torch.Tensor, extra_sum: torch.Tensor) -> dict[str, float]:
        """The aux loss and the routed modules' stats averaged over the step's micro-batches (this rank's; a
        ratio such as load max/mean is averaged, not recomputed from summed loads); empty for dense models."""
        out: dict[str, float] = {}
        if stats_sum or aux_sum.item():
            out["aux_loss"] = float(parallel.mean_across_ranks(aux_sum, self.ctx))
            out.update({key: value / self.grad_accum for key, value in stats_sum.items()})
        if self.extra_loss is not None:
            out["extra_loss"] = float(parallel.mean_across_ranks(extra_sum, self.ctx))
        return out
