"""Tiger (Su Jianlin 2023, "Tiger: A Tight-fisted Optimizer"; kexue.fm/archives/9512): Lion with β1 = β2 = β.

Implemented after Su's reference code, github.com/bojone/tiger (tiger.py, TensorFlow 1.15), and blog post:

- **Update.** m ← β·m + (1−β)·g, then θ ← θ·(1 − η·λ) − η·sign(m) (decay before the sign step, the order
  Lion uses; sign(0) = 0). One state buffer per parameter.
- **Learning rate per role** (group key `role`, see `tiger_groups`):
  - ``"matrix"``: η = α·RMS(θ) over the whole tensor;
  - ``"embedding"``: η = α·RMS(θ[i]) per row i (Su's code scales embeddings row by row);
  - ``"gain"`` (norm weights) and ``"bias"``: η = 0.5·α and λ = 0.
  RMS is of θ before the step. `rms_scaling=False` drops the RMS factor (η = α for matrices and
  embeddings), which makes Tiger exactly Lion with β1 = β2 = β on those groups. `rms_floor` (not in
  Su's Tiger; default 0, i.e. off) clamps the RMS from below so a zero-initialised tensor can still move.
- **Gradient accumulation without a buffer.** With `grad_accum_steps` = k, each `step()` is a micro-step:
  m is multiplied by β once per cycle (at its first contributing micro-step), every micro-step adds
  (1−β)/k·g, and θ moves only on the cycle's k-th micro-step. This equals plain Tiger on the mean gradient.
- **NaN guard.** If any gradient in the optimizer holds a NaN (or ±inf), the micro-step adds nothing: m is
  left unchanged and every parameter shrinks towards its centre, θ ← (θ − c)·s + c, with s = `shrink`
  (0.99) and c = 1 for gains, 0 otherwise. The micro-step still counts towards the accumulation cycle; if
  it is the cycle's last one, θ does not take the sign step that cycle (the contributions so far stay in m).

Recommended settings: β = 0.965 for language (0.945 for vision), λ = 0.01 and α = 1e-3 are tiger.py's defaults
(its README's example uses α = 1.76e-3); Su's post puts the peak α in [1e-3, 2e-3].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from isoflop.optim.lion import SignOptimizer, lazy_rows
from isoflop.optim.param_groups import decay_groups

ROLES = ("matrix", "embedding", "gain", "bias")


def tiger_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """`decay_groups` split by Tiger role: decayed tensors into embeddings (the weights of `nn.Embedding`
    modules, plus anything named `...embed.weight`) and other matrices; undecayed ones into gains (named
    `...weight`, i.e. norm scales) and biases. Empty groups are dropped. A tied output head shares the
    embedding's tensor, so it is listed once, as an embedding."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    names = {}
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
        if name.endswith("embed.weight"):
            embeddings.add(id(p))
    decay, no_decay = decay_groups(model, weight_decay)
    split = {
        "matrix": [p for p in decay["params"] if id(p) not in embeddings],
        "embedding": [p for p in decay["params"] if id(p) in embeddings],
        "gain": [p for p in no_decay["params"] if not names[id(p)].endswith("bias")],
        "bias": [p for p in no_decay["params"] if names[id(p)].endswith("bias")],
    }
    return [{"name": role, "role": role, "params": params,
             "weight_decay": weight_decay if role in ("matrix", "embedding") else 0.0}
            for role, params in split.items() if params]


class Tiger(SignOptimizer):
    """Tiger, vectorised per parameter group with `torch._foreach_*` ops (see the module docstring).

    Parameter groups may carry `role` (one of ROLES; default "matrix"). Gains and biases always get half
    the lr and no weight decay, whatever their group says. An embedding group with `lazy=True` updates only
    the rows whose gradient row is non-zero (tokens in the batch; needs grad_accum_steps = 1): absent rows
    keep their weights and momentum bit for bit (the remedy for the embedding anomaly, Su 9736).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, beta: float = 0.965, weight_decay: float = 0.01,
                 rms_scaling: bool = True, rms_floor: float = 0.0, grad_accum_steps: int = 1,
                 nan_guard: bool = True, shrink: float = 0.99):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        if not 0.0 < shrink <= 1.0:
            raise ValueError(f"shrink must be in (0, 1], got {shrink}")
        defaults = {"lr": lr, "beta": beta, "weight_decay": weight_decay, "role": "matrix",
                    "rms_scaling": rms_scaling, "rms_floor": rms_floor, "lazy": False}
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["role"] not in ROLES:
                raise ValueError(f"role must be one of {ROLES}, got {group['role']!r}")
            if group["lazy"] and group["role"] != "embedding":
                raise ValueError(f"lazy updates are for embedding groups, not {group['role']!r}")
            if group["lazy"] and grad_accum_steps != 1:
                raise ValueError("lazy embedding updates need grad_accum_steps = 1")
        self.grad_accum_steps = grad_accum_steps
        self.nan_guard = nan_guard
        self.shrink = shrink
        self.micro_step = 0
        """Micro-steps taken in the current accumulation cycle (0 .. k-1)."""
        self.cycle_decayed = False
        """Whether m has been multiplied by β in the current cycle."""

    def extra_state(self) -> dict[str, Any]:
        return {"tiger": {"micro_step": self.micro_step, "cycle_decayed": self.cycle_decayed}}

    def pop_extra_state(self, state_dict: dict[str, Any]) -> None:
        extra = state_dict.pop("tiger", {})
        self.micro_step = int(extra.get("micro_step", 0))
        self.cycle_decayed = bool(extra.get("cycle_decayed", False))

    def _has_bad_grad(self) -> bool:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return False
        # The 2-norm propagates NaN and inf and is vectorised (the inf-norm is 9x slower on CPU; LOG.md
        # 2026-11-22); it overflows only for entries near 1e19, a gradient as unusable as a NaN.
        norms = torch._foreach_norm(grads)
        return not bool(torch.stack([x.float() for x in norms]).isfinite().all())

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        k = self.grad_accum_steps
        last = self.micro_step == k - 1
        self.micro_step = (self.micro_step + 1) % k
        if self.nan_guard and self._has_bad_grad():
            self._shrink_all()
        else:
            decay_m = not self.cycle_decayed
            self.cycle_decayed = True
            for group in self.param_groups:
                if not group["lazy"]:
                    self._accumulate(group, decay_m, 1.0 / k)
            if last:
                for group in self.param_groups:
                    if group["lazy"]:
                        self._lazy_step(group)
                    else:
                        self._update(group)
        if last:
            self.cycle_decayed = False
        return loss

    def _momenta(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        for p in params:
            if not self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return [self.state[p]["exp_avg"] for p in params]

    def _accumulate(self, group: dict, decay_m: bool, scale: float) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        exp_avgs = self._momenta(params)
        if decay_m:
            torch._foreach_mul_(exp_avgs, group["beta"])
        torch._foreach_add_(exp_avgs, [p.grad for p in params], alpha=(1.0 - group["beta"]) * scale)

    def _lazy_step(self, group: dict) -> None:
        """Accumulate and update only the rows present in the batch (k = 1; see `lazy_rows`)."""
        params = [p for p in group["params"] if p.grad is not None]
        for p, m in zip(params, self._momenta(params), strict=True):
            lazy_rows(p, m, lambda ps, gs, ms: self._lazy_apply(group, ps, gs, ms))

    def _lazy_apply(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
                    exp_avgs: list[torch.Tensor]) -> None:
        torch._foreach_mul_(exp_avgs, group["beta"])
        torch._foreach_add_(exp_avgs, grads, alpha=(1.0 - group["beta"]) * 1.0)
        self._apply_update(group, params, exp_avgs)

    def _update(self, group: dict) -> None:
        params = [p for p in group["params"] if p in self.state]
        if not params:
            return
        self._apply_update(group, params, self._momenta(params))

    def _apply_update(self, group: dict, params: list[torch.Tensor], exp_avgs: list[torch.Tensor]) -> None:
        update = torch._foreach_sign(exp_avgs)
        lr, role = group["lr"], group["role"]
        if role in ("gain", "bias"):
            torch._foreach_add_(params, update, alpha=-0.5 * lr)
            return
        wd = group["weight_decay"]
        if not group["rms_scaling"]:
            if wd != 0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_add_(params, update, alpha=-lr)
            return
        if role == "embedding":  # one RMS per row, over the last dim
            rms = [p.detach().float().pow(2).mean(dim=-1, keepdim=True).sqrt().to(p.dtype) for p in params]
        else:
            norms = torch._foreach_norm(params)
            rms = [n / math.sqrt(p.numel()) for n, p in zip(norms, params, strict=True)]
        if group["rms_floor"] > 0:
            torch._foreach_clamp_min_(rms, group["rms_floor"])
        etas = torch._foreach_mul(rms, lr)
        if wd != 0:
            torch._foreach_mul_(params, torch._foreach_add(torch._foreach_mul(etas, -wd), 1.0))
        torch._foreach_addcmul_(params, update, etas, value=-1.0)  # one pass: p -= eta * sign(m)

    def _shrink_all(self) -> None:
        s = self.shrink
        for group in self.param_groups:
            params = list(group["params"])
            if not params:
                continue
            if group["role"] == "gain":  # centre c = 1
                torch._foreach_sub_(params, 1.0)
                torch._foreach_mul_(params, s)
                torch._foreach_add_(params, 1.0)
            else:
                torch._foreach_mul_(params, s)
