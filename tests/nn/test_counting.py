"""Counting from the config equals the built model's parameters and torch.utils.flop_counter's FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from isoflop.nn import attention as attention_module
from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.nn.ffn_config import MoEFFN
from isoflop.recipes import RECIPES

SHAPES = [
    dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4),
    dict(vocab_size=320, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, tie_embeddings=True),
    dict(vocab_size=512, d_model=96, n_layers=2, n_heads=6, n_kv_heads=1, ffn_hidden=200),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_param_groups_equal_built_model(shape):
    cfg = ModelConfig(**shape)
    model = cfg.build()
    groups = param_groups(cfg)
    assert groups.total == sum(p.numel() for p in model.parameters())
    embedding = model.embed.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())
    assert groups.embedding == embedding
    assert groups.non_embedding == groups.total - embedding
    assert groups.active == groups.total
    assert groups.attention == sum(p.numel() for n, p in model.named_parameters() if ".attention." in n)


def test_every_recipe_counts_equal_model():
    for name, recipe in RECIPES.items():
        cfg = recipe().resolved_model
        if param_groups(cfg).total > 30_000_000:
            with torch.device("meta"):
                model = cfg.build()
        else:
            model = cfg.build()
        assert param_groups(cfg).total == sum(p.numel() for p in model.parameters()), name


def _naive_sdpa(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    """The same math as SDPA in plain matmuls, which the flop counter sees (CPU SDPA counts as 0)."""
    if enable_gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    T, S = scores.shape[-2:]
    if is_causal:
        attn_mask = torch.ones(T, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("shape", SHAPES)
def test_training_flops_within_2_percent_of_flop_counter(shape, monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(**shape)
    model = cfg.build()
    B, T = 2, 64
    tokens = torch.randint(0, cfg.vocab_size, (B, T + 1))
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    measured = counter.get_total_flops() / (B * T)
    predicted = flops_per_token(cfg, T).training
    assert abs(measured - predicted) / measured < 0.02, (measured, predicted)


TWO_PASS = [
    dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, rope={"kind": "rerope", "window": 16}),
    dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, rope={"kind": "leaky_rerope", "window": 8, "k": 4.0}),
    # hwfa2 evaluated with ReRoPE on its full layer (layer 1 of 3); the window layers count the full square.
    dict(vocab_size=320, d_model=64, n_layers=3, n_heads=4, layout={"kind": "hwfa2", "window": 8,
                                                                   "rerope_window": 16}),
    dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, tie_embeddings=True, tied_init="projection"),
]


@pytest.mark.parametrize("shape", TWO_PASS, ids=["rerope", "leaky_rerope", "hwfa2-rerope", "tied-projection"])
def test_two_pass_rerope_and_head_projection_flops_within_2_percent(shape, monkeypatch):
    """ReRoPE's prefill computes the T x T scores twice (nn/rerope.py), so its attention costs 1.5x plain."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(shape)
    model = cfg.build()
    B, T = 2, 64
    tokens = torch.randint(0, cfg.vocab_size, (B, T + 1))
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    measured = counter.get_total_flops() / (B * T)
    predicted = flops_per_token(cfg, T)
    assert abs(measured - predicted.training) / measured < 0.02, (measured, predicted.training)
    assert param_groups(cfg).total == sum(p.numel() for p in model.parameters())
    plain = flops_per_token(ModelConfig.from_dict({k: v for k, v in shape.items()
                                                   if k not in ("rope", "layout", "tied_init")}), T)
    two_pass_layers = {"rerope": 2, "leaky_rerope": 2}.get(shape.get("rope", {}).get("kind"), 0) \
        + (1 if "layout" in shape else 0)
    assert predicted.attention_forward - plain.attention_forward == two_pass_layers * 2 * T * cfg.d_model


@pytest.mark.parametrize("experts, every, n_layers", [(4, 1, 2), (8, 2, 4)], ids=["every_block", "every_other"])
def test_top1_moe_costs_a_dense_model_plus_exactly_its_routers(experts: int, every: int, n_layers: int) -> None:
    """Iso-FLOP sanity: with top_k=1 and experts as wide as the dense MLP a token passes through one MLP either
    way, so MoE minus dense is the router alone. Convention (module docstring): a matmul costs 2 FLOPs per
    multiply-add and training is 3x forward, so the D x E router adds D * E matmul parameters, 2 * D * E forward
    and 6 * D * E training FLOPs per token in each MoE layer, and nothing to attention."""
    shape = dict(vocab_size=320, d_model=64, n_layers=n_layers, n_heads=4, n_kv_heads=2, ffn_hidden=96)
    dense = ModelConfig(**shape)
    moe = ModelConfig(**shape, ffn=MoEFFN(experts=experts, top_k=1, every=every, expert_hidden=96))
    moe_layers = n_layers // every
    D, E, T = 64, experts, 64
    f_dense, f_moe = flops_per_token(dense, T), flops_per_token(moe, T)
    assert f_moe.matmul_params - f_dense.matmul_params == moe_layers * D * E
    assert f_moe.attention_forward == f_dense.attention_forward
    assert f_moe.forward - f_dense.forward == moe_layers * 2 * D * E
    assert f_moe.training - f_dense.training == moe_layers * 6 * D * E
    assert param_groups(moe).active - param_groups(dense).active == moe_layers * D * E
