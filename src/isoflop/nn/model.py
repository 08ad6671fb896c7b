"""TransformerLM: token embedding -> blocks -> RMSNorm -> output head (tied or untied).

`model(tokens_BT)` returns logits (B, T, V). Generation passes a KVCache (see generate.py). ReRoPE kinds get
their own attention (rerope.py), whose cache holds unrotated keys.

Routed modules (MoE layers, MoD blocks) talk to the trainer through plain attributes, set on each forward:
    aux_loss: Tensor | None       their weighted auxiliary loss (in the graph), summed by `aux_loss()`
    stats: dict[str, Tensor]      detached scalars for the metrics log, gathered by `routing_stats()`
and optionally define `after_optimizer_step()` (e.g. the aux-loss-free bias update), `non_causal_reason()`
(why the module cannot be used for sampling, or None) and a `causal_routing` flag that sampling switches on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from isoflop.nn.attention import Attention, KVCache
from isoflop.nn.block import Block
from isoflop.nn.config import ModelConfig
from isoflop.nn.layout_attention import LayoutAttention
from isoflop.nn.layout_config import LayerAttention
from isoflop.nn.norm import RMSNorm
from isoflop.nn.rerope import ReRopeAttention
from isoflop.nn.rope import ReRope
from isoflop.nn.rotary import Rotary


class TransformerLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rotary = Rotary(cfg.rope, cfg.head_dim)
        self.layers = nn.ModuleList(_block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        if cfg.tied_init == "projection":  # Su 9698: the tied head reads a rotated copy of the normed state
            self.head_projection = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.init_weights()
        # The modules that report aux losses (MoE, MoD), found once: the trainer asks every micro-step.
        self._routed = [m for m in self.modules() if m is not self and hasattr(m, "aux_loss")]

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
            # our modules holding raw Parameters (MoE's 3-D expert weights) define reset_parameters(std,
            # residual_std); torch's own modules have a no-argument one and were initialised above
            if hasattr(module, "reset_parameters") and not type(module).__module__.startswith("torch."):
                module.reset_parameters(std, residual_std)
        for module in self.modules():  # the model's Rotary, and ReRoPE attention's own
            if isinstance(module, Rotary):
                module.inv_freq.copy_(torch.tensor(self.cfg.rope.inv_freq(self.cfg.head_dim)))
        if self.cfg.tied_init == "ln_vocab":  # Su 9698: the tied self-logit d * std becomes ln V
            nn.init.normal_(self.embed.weight, 0.0, math.log(self.cfg.vocab_size) / self.cfg.d_model)
        if self.cfg.tied_init == "projection":
            nn.init.orthogonal_(self.head_projection.weight)

    def forward(self, tokens_BT: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        cos, sin = self.rotary(start, tokens_BT.shape[1])
        q_scale_T1 = self.rotary.query_scale(start, tokens_BT.shape[1])  # None unless log-n scaling
        x_BTD = self.embed(tokens_BT)
        for i, layer in enumerate(self.layers):
            x_BTD = layer(x_BTD, cos, sin, cache, i, q_scale_T1)
        if cache is not None:
            cache.advance(tokens_BT.shape[1])
        return self.lm_head(self._head_input(self.norm(x_BTD)))

    def _head_input(self, h_BTD: torch.Tensor) -> torch.Tensor:
        """What the (tied) head reads: the normed state, projected or half-swapped by `tied_init` (Su 9698), so a
        token's own embedding does not dominate its logits at initialisation."""
        if self.cfg.tied_init == "projection":
            return self.head_projection(h_BTD)
        if self.cfg.tied_init == "half_swap":
            return torch.cat(h_BTD.chunk(2, dim=-1)[::-1], dim=-1)
        return h_BTD

    # ------------------------------------------------------------------ routed modules (MoE, MoD)
    def aux_loss(self) -> torch.Tensor | None:
        """The sum of the routed modules' auxiliary losses from the last forward, or None when there are none."""
        losses = [m.aux_loss for m in self._routed if isinstance(m.aux_loss, torch.Tensor)]
        return torch.stack(losses).sum() if losses else None

    def routing_stats(self) -> dict[str, float]:
        """Metrics of the last forward, keyed `<layer index>.<module path>.<name>` -> float."""
        out: dict[str, float] = {}
        for name, module in self.named_modules():
            for key, value in getattr(module, "stats", {}).items():
                out[f"{name.removeprefix('layers.')}.{key}"] = float(value)
        return out

    def after_optimizer_step(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "after_optimizer_step"):
                module.after_optimizer_step()

    def routing_load_buffers(self) -> list[torch.Tensor]:
        """Per-module load counters (buffers named `load_since_step`) the trainer sums across ranks before
        `after_optimizer_step`, so balancing sees the global batch."""
        return [b for name, b in self.named_buffers() if name.rsplit(".", 1)[-1] == "load_since_step"]

    def non_causal_reason(self) -> str | None:
        """Why this model's routing looks at other tokens and so cannot sample, or None when it can."""
        for module in self.modules():
            reason = module.non_causal_reason() if module is not self and hasattr(module, "non_causal_reason") \
                else None
            if reason:
                return reason
        return None

    def has_causal_rule(self) -> bool:
        """Whether some module routes differently for sampling (MoD's predictor or router BCE) and every routed
        module can sample: then `use_causal_routing` changes what the model computes."""
        return self.non_causal_reason() is None and any(hasattr(m, "causal_routing") for m in self.modules())

    def use_causal_routing(self, enabled: bool = True) -> None:
        """Switch routed modules to their causal rule (MoD's predictor) for sampling, or back."""
        for module in self.modules():
            if hasattr(module, "causal_routing"):
                module.causal_routing = enabled

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed.weight
        return KVCache(self.cfg.n_layers, batch, self.cfg.kv_heads, max_len, self.cfg.head_dim,
                       dtype=p.dtype, device=p.device)


def _block(cfg: ModelConfig, layer: int) -> nn.Module:
    """Block `layer`: attention and the FFN kind's module for that layer, wrapped by MoD's router if routed."""
    block = Block(attention=_attention(cfg, layer), ffn=cfg.ffn.build(cfg.d_model, cfg.ffn_hidden_size, layer),
                  d_model=cfg.d_model, norm_eps=cfg.norm_eps)
    if not cfg.mod.is_routed(layer):
        return block
    from isoflop.nn.mod import RoutedBlock

    return RoutedBlock(block, cfg.mod, cfg.d_model)


def _attention(cfg: ModelConfig, layer: int = 0) -> Attention:
    """Plain SDPA attention, the two-pass / unrotated-cache attention of the ReRoPE kinds, or the layout's
    window / NoPE / ReRoPE attention for block `layer` (nn/layout_config.py)."""
    if cfg.layout.kind != "full":
        return _layout_attention(cfg, cfg.layout.layers(cfg.n_layers, cfg.train_length)[layer])
    if cfg.rope.clipped_window() is None:
        return Attention(cfg.d_model, cfg.n_heads, cfg.kv_heads)
    return ReRopeAttention(cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.rope)


def _layout_attention(cfg: ModelConfig, spec: LayerAttention) -> Attention:
    if spec.rerope_window is not None:  # same q/k/v/o parameters, so a layout's checkpoint loads
        rope = ReRope(theta=cfg.rope.theta, window=spec.rerope_window, log_n_length=cfg.rope.log_n_length)
        return ReRopeAttention(cfg.d_model, cfg.n_heads, cfg.kv_heads, rope)
    return LayoutAttention(cfg.d_model, cfg.n_heads, cfg.kv_heads, window=spec.window, rotate=spec.rotate,
                           log_n_length=spec.log_n_length)
