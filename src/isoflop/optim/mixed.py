"""Embedding-anomaly remedies for the sign optimizers (Lion, Tiger), after Su, kexue.fm/archives/9736.

With a sign optimizer the embedding row of a rare token keeps a non-zero momentum after the token was last
seen, so sign(m) = ±1 moves the row a full step every step and it drifts to the fixed point ±1/λ. Two
remedies are options of `optim.embeddings` (LionConfig, TigerConfig):

- ``lazy``: update only the rows of tokens present in the batch (group key ``lazy``; lion.py `lazy_rows`);
- ``adamw``: AdamW for the input embedding and the sign optimizer for the rest (the Lion authors' fix, as Su
  reports it there), as
  one `MixedOptimizer` that the training loop drives like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from isoflop.optim.lion import SignOptimizer


def embedding_ids(model: nn.Module) -> set[int]:
    """ids of the input-embedding tensors: weights of `nn.Embedding` modules and anything named
    `...embed.weight` (the rule `tiger_groups` uses)."""
    ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    ids |= {id(p) for name, p in model.named_parameters() if name.endswith("embed.weight")}
    return ids


def split_embeddings(groups: list[dict], model: nn.Module) -> list[dict]:
    """`decay_groups` with the embedding tensors moved out of the "decay" group into their own "embedding"
    group (same weight decay, `role="embedding"`); other groups unchanged, empty groups dropped."""
    embeds = embedding_ids(model)
    out = []
    for group in groups:
        if group.get("name") != "decay":
            out.append(group)
            continue
        out.append({**group, "params": [p for p in group["params"] if id(p) not in embeds]})
        out.append({**group, "name": "embedding", "role": "embedding",
                    "params": [p for p in group["params"] if id(p) in embeds]})
    return [g for g in out if g["params"]]


class MixedOptimizer(torch.optim.Optimizer):
    """AdamW for some parameter groups and a sign optimizer (Lion or Tiger) for the rest, as one optimizer.

    The inner optimizers share this object's parameter-group dicts and its state, so setting `group["lr"]`
    here sets it for them, and `state_dict` / `load_state_dict` are the ordinary Optimizer ones (plus Tiger's
    accumulation counters). Each group carries `rule` ("sign" or "adamw"); AdamW groups also `lr_scale`, and
    step with lr = group["lr"] * lr_scale (AdamW usually wants a 3-10x larger lr than Lion). Tiger's NaN
    guard and accumulation cover only its own groups (TigerConfig requires grad_accum_steps = 1 here).
    A tied output head shares the embedding tensor, so with tied embeddings AdamW updates the head too.
    """

    def __init__(self, sign: SignOptimizer, adamw: torch.optim.Optimizer, lr_scale: float = 1.0):
        if lr_scale <= 0:
            raise ValueError(f"lr_scale must be positive, got {lr_scale}")
        self.sign, self.adamw = sign, adamw
        for group in sign.param_groups:
            group["rule"] = "sign"
        for group in adamw.param_groups:
            group["rule"] = "adamw"
            group.setdefault("lr_scale", lr_scale)
        super().__init__(sign.param_groups + adamw.param_groups, {})
        self._link()

    def _link(self) -> None:
        self.sign.param_groups = [g for g in self.param_groups if g["rule"] == "sign"]
        self.adamw.param_groups = [g for g in self.param_groups if g["rule"] == "adamw"]
        self.sign.state = self.state
        self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.adamw.param_groups
        peaks = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = g["lr"] * g["lr_scale"]
        try:
            self.adamw.step()
        finally:
            for g, lr in zip(groups, peaks, strict=True):
                g["lr"] = lr
        self.sign.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.sign.extra_state()}  # e.g. Tiger's accumulation position

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.sign.pop_extra_state(state_dict)
        super().load_state_dict(state_dict)
        self._link()


def with_adamw_embeddings(groups: list[dict], make_sign: Callable[[list[dict]], SignOptimizer], *,
                          lr: float, weight_decay: float | None, lr_scale: float,
                          betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """The groups whose role is "embedding" go to AdamW, the rest to `make_sign(groups)`; one MixedOptimizer
    (or the sign optimizer alone if there is no embedding)."""
    embed = [g for g in groups if g.get("role") == "embedding"]
    rest = [g for g in groups if g.get("role") != "embedding"]
    if not embed:
        return make_sign(groups)
    if weight_decay is not None:
        embed = [{**g, "weight_decay": weight_decay} for g in embed]
    adamw = torch.optim.AdamW(embed, lr=lr, betas=betas, eps=eps)
    return MixedOptimizer(make_sign(rest), adamw, lr_scale=lr_scale)
