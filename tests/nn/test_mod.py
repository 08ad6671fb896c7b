"""Mixture of Depths (nn/mod.py) against references: the dense block, a masked full-sequence block at the
original positions, hand-written BCE losses, and counting against the built model and the flop counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from isoflop.config import ConfigError
from isoflop.nn import attention as attention_module
from isoflop.nn.attention import Attention
from isoflop.nn.block import Block
from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.nn.ffn_config import MoEFFN
from isoflop.nn.mlp import SwiGLU
from isoflop.nn.mod import RoutedBlock
from isoflop.nn.mod_config import TopKMoD
from isoflop.nn.rope import DefaultRope
from isoflop.nn.rope_clipped import ReRope
from isoflop.nn.rotary import Rotary, apply_rotary
from tests.nn.test_counting import _naive_sdpa
from tests.nn.test_moe import _grouped_mm_flops

D, N_HEADS, KV_HEADS, T = 32, 4, 2, 16


def _routed(capacity: float = 0.25, *, predictor: bool = True, aux_bce_weight: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    block = Block(attention=Attention(D, N_HEADS, KV_HEADS), ffn=SwiGLU(D, 64), d_model=D, norm_eps=1e-5)
    return RoutedBlock(block, TopKMoD(capacity=capacity, predictor=predictor, aux_bce_weight=aux_bce_weight), D)


def _tables(length: int = T):
    return Rotary(DefaultRope(), D // N_HEADS)(0, length)


def _force_router(routed: RoutedBlock, r_BT: torch.Tensor) -> None:
    routed.router.forward = lambda x_BTD: r_BT.unsqueeze(-1).to(x_BTD.dtype)


def _masked_reference(block: Block, x_BTD, cos, sin, keep_BT):
    """f of the whole block run on all T tokens at their own positions, with the keys of tokens not in
    `keep_BT` masked out (a naive attention, no SDPA). Rows of unkept queries are meaningless."""
    att = block.attention
    q, k, v = att.project(block.attention_norm(x_BTD))
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k, v = (t.repeat_interleave(att.n_heads // att.kv_heads, dim=1) for t in (k, v))
    scores = q @ k.transpose(-1, -2) / att.head_dim ** 0.5
    allowed = torch.ones(T, T, dtype=torch.bool).tril() & keep_BT[:, None, None, :]
    allowed = allowed | torch.eye(T, dtype=torch.bool)  # unkept queries see themselves: no NaN rows
    a_BTD = att.merge(scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v)
    return a_BTD + block.ffn(block.ffn_norm(x_BTD + a_BTD))


def test_capacity_one_with_r_one_equals_the_dense_block():
    routed = _routed(capacity=1.0)
    x = torch.randn(3, T, D)
    cos, sin = _tables()
    _force_router(routed, torch.ones(3, T))
    torch.testing.assert_close(routed(x, cos, sin), routed.block(x, cos, sin), atol=1e-6, rtol=1e-6)


def test_minimal_capacity_routes_one_token_that_attends_only_to_itself():
    routed = _routed(capacity=0.01)  # k = max(1, floor(0.16)) = 1
    x = torch.randn(2, T, D)
    cos, sin = _tables()
    r = torch.randn(2, T)
    _force_router(routed, r)
    out = routed(x, cos, sin)
    best = r.argmax(dim=1)
    for b in range(2):
        i = int(best[b])
        changed = (out[b] != x[b]).any(dim=-1)
        assert changed.nonzero().flatten().tolist() == [i]
        f = routed.block.residual_update(x[b:b + 1, [i]], cos[[i]], sin[[i]])
        torch.testing.assert_close(out[b, i], x[b, i] + r[b, i] * f[0, 0])


def test_residual_form_positions_and_untouched_tokens_match_the_masked_reference():
    """Selected: x + r * f at the original positions (not r * (x + f), not positions 0..k-1); others: x."""
    routed = _routed(capacity=0.25)
    x = torch.randn(2, T, D)
    cos, sin = _tables()
    r = torch.randn(2, T) + 2.0
    _force_router(routed, r)
    out = routed(x, cos, sin)
    idx = RoutedBlock.select(r, 4)
    keep = torch.zeros(2, T, dtype=torch.bool).scatter(1, idx, True)
    f = _masked_reference(routed.block, x, cos, sin, keep)
    expected = torch.where(keep.unsqueeze(-1), x + r.unsqueeze(-1) * f, x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[~keep], x[~keep])  # bit-identical pass-through
    wrong_form = torch.where(keep.unsqueeze(-1), r.unsqueeze(-1) * (x + f), x)
    assert (out - wrong_form).abs().max() > 1e-2
    # The re-indexed positions pitfall (cos[:k]) would give a different answer: the check above can fail.
    x_sel = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, D))
    reindexed = routed.block.residual_update(x_sel, cos[:4], sin[:4])
    assert (reindexed - f.gather(1, idx.unsqueeze(-1).expand(-1, -1, D))).abs().max() > 1e-3


def test_exactly_k_tokens_per_sequence_with_ties_and_floor():
    r = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, 1.0], [0.0] * 6])
    idx = RoutedBlock.select(r, 2)
    assert idx.shape == (2, 2)
    assert idx[0, 0] == 0 and idx[0, 1] in (1, 2, 3, 5)
    assert torch.all(idx[:, 1:] > idx[:, :-1])  # ascending and distinct even when every score ties
    routed = _routed(capacity=0.125)
    torch.nn.init.zeros_(routed.router.weight)  # every token ties
    seen = []
    update = routed.block.residual_update
    routed.block.residual_update = lambda x, *a: seen.append(x.shape) or update(x, *a)
    for length, k in ((16, 2), (20, 2), (23, 2), (24, 3), (7, 1)):
        cos, sin = _tables(length)
        routed(torch.randn(2, length, D), cos, sin)
        assert seen[-1] == (2, k, D)
        assert float(routed.stats["selected_fraction"]) == pytest.approx(k / length)


def test_router_gets_gradient_and_unselected_tokens_pass_gradient_through():
    routed = _routed(capacity=0.25)
    x = torch.randn(2, T, D, requires_grad=True)
    cos, sin = _tables()
    routed(x, cos, sin).pow(2).sum().backward()
    assert routed.router.weight.grad is not None and routed.router.weight.grad.abs().sum() > 0
    r = routed.router(x).squeeze(-1).detach()
    keep = torch.zeros(2, T, dtype=torch.bool).scatter(1, RoutedBlock.select(r, 4), True)
    torch.testing.assert_close(x.grad[~keep], 2 * x.detach()[~keep])  # identity: d(x^2)/dx


def test_aux_losses_and_stats_match_hand_computed_bce():
    routed = _routed(capacity=0.25, predictor=True, aux_bce_weight=0.3)
    x = torch.randn(2, T, D)
    cos, sin = _tables()
    routed(x, cos, sin)
    r = routed.router(x).squeeze(-1)
    member = torch.zeros(2, T).scatter(1, RoutedBlock.select(r, 4), 1.0)
    p = routed.predictor(x).squeeze(-1)
    expected = F.binary_cross_entropy_with_logits(p, member) + 0.3 * F.binary_cross_entropy_with_logits(r, member)
    torch.testing.assert_close(routed.aux_loss, expected)
    assert set(routed.stats) == {"selected_fraction", "router_accuracy", "predictor_accuracy"}
    assert float(routed.stats["predictor_accuracy"]) == pytest.approx(float(((p > 0).float() == member).float().mean()))
    assert float(routed.stats["router_accuracy"]) == pytest.approx(float(((r > 0).float() == member).float().mean()))


def test_predictor_sees_stop_gradient_inputs():
    routed = _routed(capacity=0.25, predictor=True, aux_bce_weight=0.0)
    x = torch.randn(2, T, D, requires_grad=True)
    cos, sin = _tables()
    routed(x, cos, sin)
    routed.aux_loss.backward()
    assert x.grad is None and routed.router.weight.grad is None
    assert all(p.grad is None for p in routed.block.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in routed.predictor.parameters())


def test_no_causal_rule_means_no_sampling_and_no_aux_loss():
    routed = _routed(predictor=False, aux_bce_weight=0.0)
    assert "cannot sample" in routed.non_causal_reason() and "model.mod" in routed.non_causal_reason()
    assert _routed(predictor=True).non_causal_reason() is None
    assert _routed(predictor=False, aux_bce_weight=0.1).non_causal_reason() is None
    cos, sin = _tables()
    routed(torch.randn(1, T, D), cos, sin)
    assert routed.aux_loss is None and "predictor_accuracy" not in routed.stats


def test_rerope_is_refused_at_validation():
    with pytest.raises(ConfigError, match="mod.kind"):
        ModelConfig(vocab_size=64, rope=ReRope(window=8), mod=TopKMoD())


@pytest.mark.parametrize("capacity", [0.125, 0.5])
def test_counting_equals_built_model_and_flop_counter(capacity, monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=320, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2,
                      mod=TopKMoD(capacity=capacity, every=2, aux_bce_weight=0.01))
    model = cfg.build()
    groups = param_groups(cfg)
    assert groups.total == sum(p.numel() for p in model.parameters())
    assert groups.mod_routers == sum(p.numel() for n, p in model.named_parameters()
                                     if ".router." in n or ".predictor." in n)
    B, L = 2, 64
    tokens = torch.randint(0, cfg.vocab_size, (B, L + 1))
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens[:, :-1])
        (F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()) + model.aux_loss()).backward()
    measured = counter.get_total_flops() / (B * L)
    predicted = flops_per_token(cfg, L).training
    assert abs(measured - predicted) / measured < 0.02, (measured, predicted)  # the bound
    assert measured == predicted  # every matmul counted, the predictor's detached input included
    dense = flops_per_token(ModelConfig(vocab_size=320, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2), L)
    assert predicted < dense.training  # the test would notice counting that ignores routing


def test_staged_mode_at_full_capacity_with_r_one_equals_the_plain_moe_model():
    """Staged MoDE (Raposo et al. 2024, arXiv 2404.02258, the MoDE variants): MoD routing around a block whose
    FFN is MoE; at C = 1, r = 1 it is MoE."""
    shape = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn=MoEFFN(experts=4, top_k=2))
    torch.manual_seed(0)
    mode = ModelConfig(**shape, mod=TopKMoD(capacity=1.0, every=2)).build()
    moe = ModelConfig(**shape).build()
    mod_only = ("layers.1.router.", "layers.1.predictor.")  # MoD's own weights; the rest is the MoE model's
    state = {k.replace(".block.", "."): v for k, v in mode.state_dict().items() if not k.startswith(mod_only)}
    moe.load_state_dict(state, strict=True)
    routed = mode.layers[1]
    assert isinstance(routed, RoutedBlock)
    routed.router.forward = lambda x_BTD: torch.ones(*x_BTD.shape[:-1], 1)
    tokens = torch.randint(0, 64, (2, T))
    torch.testing.assert_close(mode(tokens), moe(tokens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(routed.block.ffn.aux_loss, moe.layers[1].ffn.aux_loss)


@pytest.mark.parametrize("moe_every", [2, 1], ids=["mode_tiny_layout", "moe_in_every_block"])
def test_staged_mode_counting_equals_built_model_and_flop_counter(moe_every: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged MoDE as `mode-tiny` builds it (TopKMoD every=2 around MoEFFN blocks): a routed block's experts see
    only its k tokens, so counting scales the MoE's active FLOPs (router included) by k/T like the rest of the
    block; counting all experts, or the MoE at full T, would miss the flop counter by 20 % or more here. The
    predictor's first layer has no input gradient (its input is detached), which counting leaves out too."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=128, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=128,
                      ffn=MoEFFN(experts=4, top_k=2, every=moe_every), mod=TopKMoD(capacity=0.25, every=2))
    model = cfg.build()
    assert param_groups(cfg).total == sum(p.numel() for p in model.parameters())
    B, L = 2, 32
    tokens = torch.randint(0, cfg.vocab_size, (B, L + 1))
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten._grouped_mm: _grouped_mm_flops}) as counter:
        logits = model(tokens[:, :-1])
        (F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()) + model.aux_loss()).backward()
    measured = counter.get_total_flops() / (B * L)
    predicted = flops_per_token(cfg, L).training
    assert measured == predicted, (measured, predicted)


def test_static_shapes_compile_once_without_graph_breaks():
    """k is fixed per T (static shapes), so torch.compile traces one graph and reuses it for new batches."""
    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(0)
    model = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, mod=TopKMoD(aux_bce_weight=0.1)).build()
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for _ in range(3):
        tokens = torch.randint(0, 64, (2, T))
        compiled(tokens).sum().backward()
        assert model.aux_loss() is not None
    assert counter.frame_count == 1
