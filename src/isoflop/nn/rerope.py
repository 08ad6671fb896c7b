"""Attention for ReRoPE and Leaky ReRoPE (Su, kexue.fm 9708): relative positions clipped at a window w.

The score of query i and key j uses the rotation by r(i - j), with r(d) = d for d < w and w + (d - w) * slope
past it (slope 0: ReRoPE; 1/k: Leaky ReRoPE). This does not fit scaled_dot_product_attention, so:

- Training and prefill: two passes, a1 = (R^i q_i) . (R^j k_j) (plain RoPE) and
  a2 = (R^(w + (i - w) * slope) q_i) . (R^(j * slope) k_j) (ReRoPE: (R^w q_i) . k_j), one taken where
  i - j < w and the other elsewhere, then the causal mask and one softmax.
- Cached decoding (one new token): one pass; the cache holds keys *unrotated*, and the single query is rotated
  by r(i - j) for every cached key j, so score_j = (R^r(i - j) q) . k_j.

Shape legend as attention.py: B batch, T new tokens, S all tokens, N query heads, K key/value heads, G = N / K,
H head dim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from isoflop.nn.attention import Attention, KVCache
from isoflop.nn.rotary import Rotary, apply_rotary

if TYPE_CHECKING:
    from isoflop.nn.rope import RopeConfig


class ReRopeAttention(Attention):
    """Attention for the rope kinds whose `clipped_window()` is not None; its KV cache holds unrotated keys."""

    def __init__(self, d_model: int, n_heads: int, kv_heads: int, rope: RopeConfig):
        super().__init__(d_model, n_heads, kv_heads)
        clipped = rope.clipped_window()
        if clipped is None:
            raise ValueError(f"rope kind {rope.kind!r} does not clip relative positions; use Attention")
        self.window, self.slope = clipped
        # cos/sin at arbitrary (clipped, fractional) positions; its inv_freq is a non-persistent buffer.
        self.rotary = Rotary(rope, self.head_dim)

    def forward(self, x_BTD: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
        """`cos_TH`, `sin_TH`: plain RoPE tables of the new tokens' positions (the model's)."""
        q_BNTH, k_BKTH, v_BKTH = self.project(x_BTD, q_scale_T1)
        T = x_BTD.shape[1]
        prefix = 0
        if cache is not None:
            prefix = cache.length
            k_BKTH, v_BKTH = cache.append(layer, k_BKTH, v_BKTH)  # unrotated keys, now (B, K, S, H)
        if cache is not None and prefix > 0 and T == 1:
            y_BNTH = self._decode(q_BNTH, k_BKTH, v_BKTH, prefix)
        else:
            y_BNTH = self._two_pass(q_BNTH, k_BKTH, v_BKTH, prefix, cos_TH, sin_TH)
        return self.merge(y_BNTH.to(x_BTD.dtype))

    def _two_pass(self, q_BNTH: torch.Tensor, k_BKSH: torch.Tensor, v_BKSH: torch.Tensor, prefix: int,
                  cos_TH: torch.Tensor, sin_TH: torch.Tensor) -> torch.Tensor:
        T, S, device = q_BNTH.shape[2], k_BKSH.shape[2], q_BNTH.device
        pos_q_T = torch.arange(prefix, prefix + T, device=device, dtype=torch.float32)
        pos_k_S = torch.arange(S, device=device, dtype=torch.float32)
        cos_SH, sin_SH = (cos_TH, sin_TH) if S == T else self.rotary.tables(pos_k_S)
        # Pass 1: plain RoPE.
        q1_BNTH, k1_BKSH = apply_rotary(q_BNTH, cos_TH, sin_TH), apply_rotary(k_BKSH, cos_SH, sin_SH)
        # Pass 2: query at w + (i - w) * slope, key at j * slope, so their difference is w + (i - j - w) * slope.
        q2_BNTH = apply_rotary(q_BNTH, *self.rotary.tables(self.window + (pos_q_T - self.window) * self.slope))
        k2_BKSH = k_BKSH if self.slope == 0 else apply_rotary(k_BKSH, *self.rotary.tables(pos_k_S * self.slope))
        distance_TS = pos_q_T[:, None] - pos_k_S[None, :]
        scores_BNTS = torch.where(distance_TS < self.window, self._scores(q1_BNTH, k1_BKSH),
                                  self._scores(q2_BNTH, k2_BKSH))
        scores_BNTS = scores_BNTS.masked_fill(distance_TS < 0, float("-inf"))
        return scores_BNTS.softmax(dim=-1) @ self._expand(v_BKSH).float()

    def _decode(self, q_BN1H: torch.Tensor, k_BKSH: torch.Tensor, v_BKSH: torch.Tensor, prefix: int) -> torch.Tensor:
        B, N, _, H = q_BN1H.shape
        K, S = k_BKSH.shape[1], k_BKSH.shape[2]
        distance_S = prefix - torch.arange(S, device=q_BN1H.device, dtype=torch.float32)
        clipped_S = torch.where(distance_S < self.window, distance_S,
                                self.window + (distance_S - self.window) * self.slope)
        # The one query rotated by each key's clipped relative position: (B, N, S, H), grouped by KV head.
        q_BKGSH = apply_rotary(q_BN1H, *self.rotary.tables(clipped_S)).float().view(B, K, N // K, S, H)
        scores_BKGS = torch.einsum("bkgsh,bksh->bkgs", q_BKGSH, k_BKSH.float()) * H ** -0.5
        y_BKGH = torch.einsum("bkgs,bksh->bkgh", scores_BKGS.softmax(dim=-1), v_BKSH.float())
        return y_BKGH.reshape(B, N, 1, H)

    def _scores(self, q_BNTH: torch.Tensor, k_BKSH: torch.Tensor) -> torch.Tensor:
        return (q_BNTH.float() @ self._expand(k_BKSH).float().transpose(-1, -2)) * self.head_dim ** -0.5

    def _expand(self, x_BKSH: torch.Tensor) -> torch.Tensor:
        """Key/value heads repeated for their query heads (B, N, S, H)."""
        return x_BKSH.repeat_interleave(self.n_heads // self.kv_heads, dim=1)
