"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2).

Per step, with momentum m (the only state buffer), gradient g, learning rate η and weight decay λ:

    c = β1·m + (1−β1)·g
    θ ← θ·(1 − η·λ) − η·sign(c)        (decoupled decay, then the sign update; sign(0) = 0)
    m ← β2·m + (1−β2)·g

The order of floating-point operations is that of `lion_pytorch` 0.2.5, so the two agree to rounding.
Lion wants an lr 3–10x smaller than AdamW's and a weight decay 3–10x larger (the effective decay is η·λ).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class Lion(torch.optim.Optimizer):
    """Lion, vectorised per parameter group with `torch._foreach_*` ops.

    `decoupled_weight_decay=True` divides λ by the initial lr (as lion_pytorch does), so the decay per step
    follows the schedule's lr ratio rather than the lr itself.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= b <= 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1], got {betas}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        self._init_lr = lr
        self.decoupled_weight_decay = decoupled_weight_decay
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            if self.decoupled_weight_decay:
                wd = wd / self._init_lr
            if wd != 0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            update = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(update, grads, alpha=1.0 - beta1)
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_mul_(exp_avgs, beta2)
            torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta2)
        return loss
