"""TransformerLM: token embedding -> blocks -> RMSNorm -> output head (tied or untied).

`model(tokens_BT)` returns logits (B, T, V). Generation passes a KVCache (see generate.py). Each slot is built
from what its variant says: every block's attention from the layout (`ModelConfig.attention_layers()`), its
FFN from the FFN kind, its Mixture-of-Depths wrapper from the MoD kind, and the module the head reads through
from `tied_init`.

Routed modules (MoE layers, MoD blocks) are `RoutedModule`s (nn/contract.py); the model gathers them once and
answers the trainer's `TrainableLM` questions (aux loss, routing stats, after-step hooks, causal routing) from
them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from isoflop.nn.attention import KVCache
from isoflop.nn.block import Block
from isoflop.nn.contract import RoutedModule
from isoflop.nn.norm import RMSNorm
from isoflop.nn.rotary import Rotary

if TYPE_CHECKING:
    from isoflop.nn.attention_config import LayerAttention
    from isoflop.nn.config import ModelConfig


class TransformerLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rotary = Rotary(cfg.rope, cfg.head_dim)
        self.layers = nn.ModuleList(_block(cfg, i, attention) for i, attention in enumerate(cfg.attention_layers()))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # What the head reads the normed state through: an identity, or Su 9698's projection / half swap.
        self.head_projection = cfg.tied_init.build(cfg.d_model)
        self.init_weights()
        # The routed modules (MoE, MoD), found once: the trainer asks for their losses every micro-step.
        self._routed = [m for m in self.modules() if isinstance(m, RoutedModule)]

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) for embeddings and linear weights; residual output projections (attention's
        o_proj, the FFN's down_proj) get init_std / sqrt(2 * n_layers) (GPT-2); norm weights are 1; then the
        tied_init kind's own init."""
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
            # our modules holding raw Parameters (MoE's 3-D expert weights) define reset_parameters(std,
            # residual_std); torch's own modules have a no-argument one and were initialised above
            if hasattr(module, "reset_parameters") and not type(module).__module__.startswith("torch."):
                module.reset_parameters(std, residual_std)
        for module in self.modules():  # the model's Rotary, and ReRoPE attention's own
            if isinstance(module, Rotary):
                module.reset_frequencies()
        self.cfg.tied_init.init_(embedding=self.embed, head_projection=self.head_projection,
                                 vocab_size=self.cfg.vocab_size, d_model=self.cfg.d_model)

    def forward(self, tokens_BT: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        cos, sin = self.rotary(start, tokens_BT.shape[1])
        q_scale_T1 = self.rotary.query_scale(start, tokens_BT.shape[1])  # None unless log-n scaling
        x_BTD = self.embed(tokens_BT)
        for i, layer in enumerate(self.layers):
            x_BTD = layer(x_BTD, cos, sin, cache, i, q_scale_T1)
        if cache is not None:
            cache.advance(tokens_BT.shape[1])
        return self.lm_head(self.head_projection(self.norm(x_BTD)))

    # ------------------------------------------------------------------ the trainer's contract (nn/contract.py)
    def aux_loss(self) -> torch.Tensor | None:
        """The sum of the routed modules' auxiliary losses from the last forward, or None when there are none."""
        losses = [m.aux_loss for m in self._routed if m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else None

    def routing_stats(self) -> dict[str, float]:
        """Metrics of the last forward, keyed `<layer index>.<module path>.<name>` -> float."""
        out: dict[str, float] = {}
        for name, module in self.named_modules():
            if isinstance(module, RoutedModule):
                for key, value in module.stats.items():
                    out[f"{name.removeprefix('layers.')}.{key}"] = float(value)
        return out

    def after_optimizer_step(self) -> None:
        for module in self._routed:
            module.after_optimizer_step()

    def routing_load_buffers(self) -> list[torch.Tensor]:
        """The routed modules' load counters, which the trainer sums across ranks before `after_optimizer_step`,
        so balancing sees the global batch."""
        return [buffer for module in self._routed for buffer in module.load_buffers()]

    def non_causal_reason(self) -> str | None:
        """Why this model's routing looks at other tokens and so cannot sample, or None when it can."""
        return next((r for r in (m.non_causal_reason() for m in self._routed) if r), None)

    def has_causal_rule(self) -> bool:
        """Whether some module routes differently for sampling (MoD's predictor or router BCE) and every routed
        module can sample: then `use_causal_routing` changes what the model computes."""
        return self.non_causal_reason() is None and any(m.has_causal_rule() for m in self._routed)

    def use_causal_routing(self, enabled: bool = True) -> None:
        """Switch routed modules to their causal rule (MoD's predictor) for sampling, or back."""
        for module in self._routed:
            module.use_causal_routing(enabled)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed.weight
        return KVCache(self.cfg.n_layers, batch, self.cfg.kv_heads, max_len, self.cfg.head_dim,
                       dtype=p.dtype, device=p.device)


def _block(cfg: ModelConfig, layer: int, attention: LayerAttention) -> nn.Module:
    """Block `layer`: its attention and the FFN kind's module for that layer, as the MoD kind wraps it."""
    block = Block(attention=attention.build(cfg.d_model, cfg.n_heads, cfg.kv_heads),
                  ffn=cfg.ffn.build(cfg.d_model, cfg.ffn_hidden_size, layer),
                  d_model=cfg.d_model, norm_eps=cfg.norm_eps)
    return cfg.mod.wrap(block, cfg.d_model, layer)
