"""Attention of one layer of a hybrid layout (nn/layout_config.py): a causal window, optional NoPE, and the
layer's own log-n query scaling. Same parameters (q/k/v/o_proj) as Attention, so checkpoints load across
layouts that share shapes.

The window goes to scaled_dot_product_attention as a boolean mask (key j visible to query i iff
0 <= i - j < window); a flash kernel with a native sliding window would skip the masked blocks, but SDPA's
boolean-mask path is what runs on every backend, and these layouts are studied at small scale.

Shape legend as attention.py: B batch, T new tokens, S all cached tokens, D model width, N query heads,
K key/value heads, H head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from isoflop.nn.attention import Attention, KVCache
from isoflop.nn.rotary import apply_rotary


def window_mask(prefix: int, T: int, S: int, window: int | None, device: torch.device | str) -> torch.Tensor:
    """(T, S) boolean mask: query t (position prefix + t) sees key j iff 0 <= prefix + t - j < window."""
    distance_TS = (torch.arange(prefix, prefix + T, device=device)[:, None]
                   - torch.arange(S, device=device)[None, :])
    visible = distance_TS >= 0
    return visible if window is None else visible & (distance_TS < window)


class LayoutAttention(Attention):
    """Causal attention restricted to a window (None: the whole prefix), with or without RoPE; the KV cache
    holds keys as they enter the scores (rotated, or unrotated under NoPE)."""

    def __init__(self, d_model: int, n_heads: int, kv_heads: int, *, window: int | None, rotate: bool = True,
                 log_n_length: int | None = None):
        super().__init__(d_model, n_heads, kv_heads)
        self.window, self.rotate, self.log_n_length = window, rotate, log_n_length

    def forward(self, x_BTD: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
        """`q_scale_T1`: the model's log-n factors, replaced by this layer's own when `log_n_length` is set."""
        T = x_BTD.shape[1]
        prefix = cache.length if cache is not None else 0
        if self.log_n_length is not None:
            q_scale_T1 = log_n_scale(prefix, T, self.log_n_length, x_BTD.device)
        q_BNTH, k_BKTH, v_BKTH = self.project(x_BTD, q_scale_T1)
        if self.rotate:
            q_BNTH, k_BKTH = apply_rotary(q_BNTH, cos_TH, sin_TH), apply_rotary(k_BKTH, cos_TH, sin_TH)
        if cache is not None:
            k_BKTH, v_BKTH = cache.append(layer, k_BKTH, v_BKTH)  # now (B, K, S, H)
        mask_TS = window_mask(prefix, T, k_BKTH.shape[2], self.window, x_BTD.device)
        y_BNTH = F.scaled_dot_product_attention(q_BNTH, k_BKTH, v_BKTH, attn_mask=mask_TS,
                                                enable_gqa=self.kv_heads != self.n_heads)
        return self.merge(y_BNTH)


def log_n_scale(start: int, length: int, train_length: int, device: torch.device | str) -> torch.Tensor:
    """(length, 1) factors max(1, ln(p + 1) / ln N) of positions start .. start + length - 1 (Su 8823): 1 up to
    the training length N, growing past it."""
    positions = torch.arange(start + 1, start + length + 1, device=device, dtype=torch.float32)
    return (positions.log() / math.log(train_length)).clamp_min(1.0).unsqueeze(-1)
