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


class SignOptimizer(torch.optim.Optimizer):
    """What the sign optimizers (Lion, Tiger) share for `MixedOptimizer` (mixed.py), which wraps one: counters
    kept outside torch's per-parameter `state` travel as extra top-level entries of `state_dict`."""

    def extra_state(self) -> dict[str, Any]:
        """Entries `state_dict` holds beyond torch's "state" and "param_groups" (none for Lion)."""
        return {}

    def pop_extra_state(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters from those entries of `state_dict`, removing them from it."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.extra_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.pop_extra_state(state_dict)
        super().load_state_dict(state_dict)


class Lion(SignOptimizer):
    """Lion, vectorised per parameter group with `torch._foreach_*` ops.

    `decoupled_weight_decay=True` divides λ by the initial lr (as lion_pytorch does), so the decay per step
    follows the schedule's lr ratio rather than the lr itself.

    A parameter group with `lazy=True` (an input embedding; see `lazy_rows`) updates only the rows whose
    gradient row is non-zero: the remedy for the sign optimizers' embedding anomaly.
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
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group.get("lazy", False):
                for p in params:
                    lazy_rows(p, self.state[p]["exp_avg"],
                              lambda ps, gs, ms, group=group: self._apply(group, ps, gs, ms))
                continue
            self._apply(group, params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params])
        return loss

    def _apply(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
               exp_avgs: list[torch.Tensor]) -> None:
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


def present_rows(grad: torch.Tensor) -> torch.Tensor:
    """Indices of the rows (first dim) of `grad` holding any non-zero entry: the tokens in the batch."""
    return grad.reshape(grad.shape[0], -1).ne(0).any(dim=1).nonzero().squeeze(1)


def lazy_rows(param: torch.Tensor, exp_avg: torch.Tensor,
              apply: Callable[[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]], None]) -> None:
    """Lazy (sparse) update of an embedding matrix: `apply(params, grads, exp_avgs)` runs the optimizer's
    rule on copies of the rows whose gradient row is non-zero, which are then written back. Rows of tokens
    absent from the batch are untouched: no decay, no sign step, no momentum change (Su, kexue.fm 9736)."""
    rows = present_rows(param.grad)
    if rows.numel() == 0:
        return
    if rows.numel() == param.shape[0]:
        apply([param], [param.grad], [exp_avg])
        return
    sub_p, sub_m = param.index_select(0, rows), exp_avg.index_select(0, rows)
    apply([sub_p], [param.grad.index_select(0, rows)], [sub_m])
    param.index_copy_(0, rows, sub_p)
    exp_avg.index_copy_(0, rows, sub_m)
