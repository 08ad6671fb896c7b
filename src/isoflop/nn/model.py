"""TransformerLM: token embedding -> blocks -> RMSNorm -> output head (tied or untied).

`model(tokens_BT)` returns logits (B, T, V). Generation passes a KVCache (see generate.py). ReRoPE kinds get
their own attention (rerope.py), whose cache holds unrotated keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from isoflop.nn.attention import Attention, KVCache
from isoflop.nn.block import Block
from isoflop.nn.config import ModelConfig
from isoflop.nn.norm import RMSNorm
from isoflop.nn.rerope import ReRopeAttention
from isoflop.nn.rotary import Rotary


class TransformerLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rotary = Rotary(cfg.rope, cfg.head_dim)
        self.layers = nn.ModuleList(
            Block(attention=_attention(cfg),
                  ffn=cfg.ffn.build(cfg.d_model, cfg.ffn_hidden_size), d_model=cfg.d_model,
                  norm_eps=cfg.norm_eps)
            for _ in range(cfg.n_layers)
        )
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) for embeddings and linear weights; residual output projections (attention's
        o_proj, the FFN's down_proj) get init_std / sqrt(2 * n_layers) (GPT-2); norm weights are 1."""
        std = self.cfg.init_std
        residual_std = std / math.sqrt(2 * self.cfg.n_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        for module in self.modules():  # a second pass: modules() visits parents before their children
            for name in getattr(module, "residual_projections", ()):
                nn.init.normal_(getattr(module, name).weight, 0.0, residual_std)
        for module in self.modules():  # the model's Rotary, and ReRoPE attention's own
            if isinstance(module, Rotary):
                module.inv_freq.copy_(torch.tensor(self.cfg.rope.inv_freq(self.cfg.head_dim)))

    def forward(self, tokens_BT: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        cos, sin = self.rotary(start, tokens_BT.shape[1])
        q_scale_T1 = self.rotary.query_scale(start, tokens_BT.shape[1])  # None unless log-n scaling
        x_BTD = self.embed(tokens_BT)
        for i, layer in enumerate(self.layers):
            x_BTD = layer(x_BTD, cos, sin, cache, i, q_scale_T1)
        if cache is not None:
            cache.advance(tokens_BT.shape[1])
        return self.lm_head(self.norm(x_BTD))

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed.weight
        return KVCache(self.cfg.n_layers, batch, self.cfg.kv_heads, max_len, self.cfg.head_dim,
                       dtype=p.dtype, device=p.device)


def _attention(cfg: ModelConfig) -> Attention:
    """Plain SDPA attention, or the two-pass / unrotated-cache attention of the ReRoPE kinds."""
    if cfg.rope.clipped_window() is None:
        return Attention(cfg.d_model, cfg.n_heads, cfg.kv_heads)
    return ReRopeAttention(cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.rope)
