"""Mixture of Depths (Raposo et al. 2024, arXiv 2404.02258): a routed block processes only some tokens.

Training and teacher-forced evaluation (the non-causal rule): a linear router gives each token a scalar
r = w . x; per sequence the top k = floor(capacity * T) tokens (fixed k, so shapes are static) are gathered in
their original order, run through the wrapped block's residual update f with their *original* RoPE positions
and a causal mask over that order, and get x + r * f(x). The rest pass through bit-identical. Top-k over the
sequence looks at later tokens, so this rule cannot sample.

Sampling (the causal rule, `causal_routing = True`): a token is routed when the predictor (an MLP on
stop-gradient inputs, trained with BCE to predict top-k membership) says sigmoid > 0.5, or, with no predictor
and aux_bce_weight > 0, when sigmoid(r) > 0.5 (the paper's two fixes). With a KV cache only routed tokens write
keys and values: each sequence gets a compact cache of its routed tokens (see `_decode_caches`).

Shape legend: B batch, T tokens, D model width, H head dim (cos/sin rows), k tokens routed per sequence.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.nn.attention import KVCache
from isoflop.nn.block import Block
from isoflop.nn.contract import RoutedModule

if TYPE_CHECKING:
    from isoflop.nn.mod_config import TopKMoD


class RoutedBlock(RoutedModule):
    """A Block behind a top-k router; same call signature as Block. A RoutedModule (nn/contract.py): sets
    `aux_loss` and `stats` on each forward and switches to the causal rule with `use_causal_routing`."""

    def __init__(self, block: Block, mod: TopKMoD, d_model: int):
        super().__init__()
        self.block = block
        self.mod = mod
        self.router = nn.Linear(d_model, 1, bias=False)
        # The paper's auxiliary MLP predictor; TopKMoD.router_params counts exactly these shapes.
        self.predictor = nn.Sequential(nn.Linear(d_model, d_model // 2, bias=False), nn.SiLU(),
                                       nn.Linear(d_model // 2, 1, bias=False)) if mod.predictor else None
        self.causal_routing = False
        # Per generation (keyed weakly by the model's KVCache): one compact single-layer cache per sequence,
        # holding only that sequence's routed tokens. Kept here rather than as a mask in KVCache so that decode
        # attends to routed keys only (the paper's sampling speed-up) and attention.py stays unchanged.
        self._decode_caches: weakref.WeakKeyDictionary[KVCache, list[KVCache]] = weakref.WeakKeyDictionary()

    def has_causal_rule(self) -> bool:
        return True

    def use_causal_routing(self, enabled: bool = True) -> None:
        self.causal_routing = enabled

    def non_causal_reason(self) -> str | None:
        if self.predictor is not None or self.mod.aux_bce_weight > 0:
            return None
        return ("model.mod has neither a predictor nor aux_bce_weight > 0: its top-k routing looks at later "
                "tokens, so it cannot sample")

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
        r_BT = self.router(x_BTD).squeeze(-1)
        if self.causal_routing:
            return self._causal_forward(x_BTD, r_BT, cos, sin, cache, q_scale_T1)
        if cache is not None:
            raise RuntimeError("top-k routing cannot decode with a KV cache; call model.use_causal_routing(True)")
        B, T, D = x_BTD.shape
        idx_Bk = self.select(r_BT, self.mod.selected(T))
        idx_BkD = idx_Bk.unsqueeze(-1).expand(-1, -1, D)
        x_BkD = x_BTD.gather(1, idx_BkD)
        # Original positions: row idx of the (T, H) tables for each routed token, broadcast over heads.
        cos_B1kH, sin_B1kH = cos[idx_Bk].unsqueeze(1), sin[idx_Bk].unsqueeze(1)
        q_scale = q_scale_T1[idx_Bk].unsqueeze(1) if q_scale_T1 is not None else None
        f_BkD = self.block.residual_update(x_BkD, cos_B1kH, sin_B1kH, None, layer, q_scale)
        r_Bk = r_BT.gather(1, idx_Bk)
        # x + r * f (the paper), not r * (x + f); scatter leaves every other token's row untouched.
        out_BTD = x_BTD.scatter(1, idx_BkD, x_BkD + r_Bk.unsqueeze(-1).to(f_BkD.dtype) * f_BkD)
        self._losses_and_stats(x_BTD, r_BT, idx_Bk)
        return out_BTD

    @staticmethod
    def select(r_BT: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (B, k) of each sequence's k largest router outputs, ascending, so causal order is kept.
        torch.topk returns exactly k even among ties (a strict `> threshold` rule would not)."""
        return torch.topk(r_BT, k, dim=1, sorted=False).indices.sort(dim=1).values

    def _losses_and_stats(self, x_BTD: torch.Tensor, r_BT: torch.Tensor, idx_Bk: torch.Tensor) -> None:
        member_BT = torch.zeros_like(r_BT, dtype=torch.float32).scatter(1, idx_Bk, 1.0)
        r_float_BT = r_BT.float()
        losses = []
        stats = {"selected_fraction": member_BT.mean(),
                 "router_accuracy": ((r_float_BT > 0).float() == member_BT).float().mean()}
        if self.predictor is not None:
            # Stop-gradient input: the predictor learns membership without touching the LM (the paper's method b).
            p_BT = self.predictor(x_BTD.detach()).squeeze(-1).float()
            losses.append(F.binary_cross_entropy_with_logits(p_BT, member_BT))
            stats["predictor_accuracy"] = ((p_BT > 0).float() == member_BT).float().mean()
        if self.mod.aux_bce_weight > 0:
            # Centres sigmoid(r) on 0.5 so the router itself can decide causally (the paper's method a).
            losses.append(self.mod.aux_bce_weight * F.binary_cross_entropy_with_logits(r_float_BT, member_BT))
        self.aux_loss = torch.stack(losses).sum() if losses else None
        self.stats = {key: value.detach() for key, value in stats.items()}

    # ------------------------------------------------------------------ the causal rule (sampling)
    def routed_causally(self, x_BTD: torch.Tensor, r_BT: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: tokens the causal rule routes. logit > 0 is sigmoid > 0.5 without its rounding."""
        if self.predictor is not None:
            return self.predictor(x_BTD).squeeze(-1) > 0
        if self.mod.aux_bce_weight > 0:
            return r_BT > 0
        raise RuntimeError(self.non_causal_reason())

    def _causal_forward(self, x_BTD: torch.Tensor, r_BT: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        cache: KVCache | None, q_scale_T1: torch.Tensor | None) -> torch.Tensor:
        """Each sequence routes a different number of tokens, so this loops over the batch (sampling only)."""
        routed_BT = self.routed_causally(x_BTD, r_BT)
        caches = self._sequence_caches(cache, x_BTD.shape[0]) if cache is not None else None
        out_BTD = x_BTD.clone()
        for b in range(x_BTD.shape[0]):
            idx_n = routed_BT[b].nonzero().squeeze(-1)
            if idx_n.numel() == 0:  # nothing to attend from or to write: the block is skipped
                continue
            x_1nD = x_BTD[b, idx_n].unsqueeze(0)
            q_scale = q_scale_T1[idx_n] if q_scale_T1 is not None else None
            own = caches[b] if caches is not None else None
            f_1nD = self.block.residual_update(x_1nD, cos[idx_n], sin[idx_n], own, 0, q_scale)
            if own is not None:
                own.advance(idx_n.numel())
            out_BTD[b, idx_n] = x_1nD[0] + r_BT[b, idx_n].unsqueeze(-1).to(f_1nD.dtype) * f_1nD[0]
        self.aux_loss = None
        self.stats = {"selected_fraction": routed_BT.float().mean().detach()}
        return out_BTD

    def _sequence_caches(self, cache: KVCache, batch: int) -> list[KVCache]:
        """The compact caches belonging to the model's `cache`, made when it is first seen (empty)."""
        caches = self._decode_caches.get(cache)
        if caches is None:
            if cache.length != 0:
                raise RuntimeError("a routed block joined a generation midway; start with a new KV cache")
            attention = self.block.attention
            caches = [KVCache(1, 1, attention.kv_heads, cache.capacity, attention.head_dim,
                              dtype=cache.keys.dtype, device=cache.keys.device) for _ in range(batch)]
            self._decode_caches[cache] = caches
        return caches
