"""A pre-norm transformer block composed from two slots: a mixer (attention) and an FFN.

x = x + mixer(norm(x)); x = x + ffn(norm(x)). The FFN slot takes any module built by a FFNConfig, so an MoE
layer plugs in without subclassing; a routed block (Mixture of Depths) wraps a whole Block.
"""

from __future__ import annotations

import torch
from torch import nn

from isoflop.nn.attention import Attention, KVCache
from isoflop.nn.norm import RMSNorm


class Block(nn.Module):
    def __init__(self, *, attention: Attention, ffn: nn.Module, d_model: int, norm_eps: float):
        super().__init__()
        self.attention_norm = RMSNorm(d_model, norm_eps)
        self.attention = attention
        self.ffn_norm = RMSNorm(d_model, norm_eps)
        self.ffn = ffn

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
        x_BTD = x_BTD + self.attention(self.attention_norm(x_BTD), cos, sin, cache, layer, q_scale_T1)
        return x_BTD + self.ffn(self.ffn_norm(x_BTD))

    def residual_update(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        cache: KVCache | None = None, layer: int = 0,
                        q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
        """f with block(x) = x + f(x): attention's and the FFN's contributions together. Mixture of Depths
        (mod.py) scales f by its router weight; equal to `forward(x) - x` up to float rounding."""
        a_BTD = self.attention(self.attention_norm(x_BTD), cos, sin, cache, layer, q_scale_T1)
        return a_BTD + self.ffn(self.ffn_norm(x_BTD + a_BTD))
