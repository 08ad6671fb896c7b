"""Causal self-attention through scaled_dot_product_attention, with grouped-query heads and a KV cache.

Shape legend: B batch, T new tokens, S all cached tokens (prefix + new), D model width,
N query heads, K key/value heads, H head dim. The ReRoPE kinds, which do not fit SDPA, use rerope.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.nn.rotary import apply_rotary


class KVCache:
    """Preallocated keys and values for every layer; `length` tokens are filled."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int,
                 *, dtype: torch.dtype, device: torch.device | str):
        shape = (n_layers, batch, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def append(self, layer: int, k_BKTH: torch.Tensor, v_BKTH: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values for `layer` after the filled prefix; return the whole (B, K, S, H)."""
        end = self.length + k_BKTH.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens; {end} requested")
        self.keys[layer, :, :, self.length:end] = k_BKTH
        self.values[layer, :, :, self.length:end] = v_BKTH
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n_tokens: int) -> None:
        """Called by the model once every layer has appended `n_tokens`."""
        self.length += n_tokens


class Attention(nn.Module):
    residual_projections = ("o_proj",)

    def __init__(self, d_model: int, n_heads: int, kv_heads: int):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = n_heads, kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x_BTD: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
        """`q_scale_T1`: per-position query factors (log-n scaling), or None."""
        q_BNTH, k_BKTH, v_BKTH = self.project(x_BTD, q_scale_T1)
        q_BNTH, k_BKTH = apply_rotary(q_BNTH, cos_TH, sin_TH), apply_rotary(k_BKTH, cos_TH, sin_TH)

        T = x_BTD.shape[1]
        prefix = 0
        if cache is not None:
            prefix = cache.length
            k_BKTH, v_BKTH = cache.append(layer, k_BKTH, v_BKTH)  # now (B, K, S, H)
        if prefix == 0:
            mask, causal = None, True
        elif T == 1:  # one new token sees the whole prefix
            mask, causal = None, False
        else:  # a chunk after a prefix: token t sees prefix + t + 1 keys
            S = prefix + T
            mask = torch.ones(T, S, dtype=torch.bool, device=x_BTD.device).tril(diagonal=prefix)
            causal = False
        y_BNTH = F.scaled_dot_product_attention(q_BNTH, k_BKTH, v_BKTH, attn_mask=mask, is_causal=causal,
                                                enable_gqa=self.kv_heads != self.n_heads)
        return self.merge(y_BNTH)

    def project(self, x_BTD: torch.Tensor, q_scale_T1: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unrotated queries (B, N, T, H), scaled by `q_scale_T1` if given, keys and values (B, K, T, H)."""
        B, T, _ = x_BTD.shape
        q_BNTH = self.q_proj(x_BTD).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k_BKTH = self.k_proj(x_BTD).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v_BKTH = self.v_proj(x_BTD).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if q_scale_T1 is not None:
            q_BNTH = (q_BNTH * q_scale_T1).to(q_BNTH.dtype)
        return q_BNTH, k_BKTH, v_BKTH

    def merge(self, y_BNTH: torch.Tensor) -> torch.Tensor:
        """The output projection of the heads' outputs (B, N, T, H) -> (B, T, D)."""
        B, _, T, _ = y_BNTH.shape
        return self.o_proj(y_BNTH.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
