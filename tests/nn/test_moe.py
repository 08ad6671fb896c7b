"""The MoE layer against a per-token reference, and its contracts with the model, counting and the trainer."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from isoflop.nn import attention as attention_module
from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.nn.ffn_config import ExpertChoice, MoEFFN, SigmoidBias, SoftmaxTopK
from isoflop.nn.moe import Experts, MoE
from isoflop.optim.param_groups import decay_groups
from tests.nn.test_counting import _naive_sdpa

D, H = 16, 8  # multiples of 4: the grouped matmul's fp32 stride rule holds, so both paths can run


def _layer(seed=0, **kw) -> MoE:
    torch.manual_seed(seed)
    cfg = MoEFFN(**{"experts": 5, "top_k": 2, **kw})
    moe = MoE(cfg, D, H)
    for p in moe.parameters():  # wide enough that the router's choices are far from ties
        torch.nn.init.normal_(p, 0.0, 0.5)
    if moe.selection_bias is not None:
        moe.selection_bias.copy_(torch.randn(cfg.experts) * 0.3)
    return moe


def _expert(moe: MoE, e: int, x_D: torch.Tensor) -> torch.Tensor:
    group, i = (moe.experts_frozen, e) if e < moe.cfg.frozen_experts else (moe.experts, e - moe.cfg.frozen_experts)
    return group.down_proj[i] @ (F.silu(group.gate_proj[i] @ x_D) * (group.up_proj[i] @ x_D))


def _naive(moe: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """Token by token, expert by expert, from the definitions (Python lists, no sorting, no batching)."""
    cfg, x_ND = moe.cfg, x_BTD.reshape(-1, D)
    n, e_all = x_ND.shape[0], cfg.experts
    logits = x_ND @ moe.router_weight().T
    picks: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(n)]
    if isinstance(cfg.router, ExpertChoice):
        s = logits.softmax(-1)
        k = max(1, math.floor(n * cfg.router.capacity / e_all))
        for e in range(e_all):
            for t in sorted(range(n), key=lambda t: -s[t, e].item())[:k]:
                picks[t].append((e, s[t, e]))
    else:
        load, cap = [0] * e_all, math.inf
        if cfg.capacity_factor is not None:
            cap = math.ceil(cfg.top_k * n / e_all * cfg.capacity_factor)
        for t in range(n):
            if isinstance(cfg.router, SigmoidBias):
                scores = logits[t].sigmoid()
                chosen = sorted(range(e_all), key=lambda e: -(scores[e] + moe.selection_bias[e]).item())[:cfg.top_k]
            else:
                scores = logits[t].softmax(-1)
                chosen = sorted(range(e_all), key=lambda e: -scores[e].item())[:cfg.top_k]
            gates = [scores[e] for e in chosen]
            if cfg.router.renormalize:
                gates = [g / sum(gates) for g in gates]
            for e, g in zip(chosen, gates, strict=True):
                load[e] += 1
                if load[e] <= cap:
                    picks[t].append((e, g))
    rows = []
    for t in range(n):
        y = torch.zeros(D)
        for e, g in picks[t]:
            if e < e_all - cfg.noop_experts:
                y = y + g * _expert(moe, e, x_ND[t])
        if moe.shared is not None:
            shared = moe.shared(x_ND[t])
            y = y + (torch.sigmoid(moe.shared_gate(x_ND[t])) * shared if moe.shared_gate is not None else shared)
        rows.append(y)
    return torch.stack(rows).view(x_BTD.shape)


ROUTERS = {
    "softmax_renorm": SoftmaxTopK(renormalize=True),
    "softmax_raw": SoftmaxTopK(renormalize=False),
    "sigmoid_bias": SigmoidBias(),
    "expert_choice": ExpertChoice(capacity=1.5),
}
VARIANTS = {
    "plain": {},
    "shared_gated_noop": {"shared_experts": 1, "shared_gate": True, "noop_experts": 1},
    "frozen_shared": {"frozen_experts": 2, "shared_experts": 2},
}


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_mm", "expert_loop"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("router", ROUTERS)
def test_forward_and_backward_equal_per_token_reference(router, variant, grouped, monkeypatch):
    monkeypatch.setattr(Experts, "use_grouped_mm", grouped)
    moe = _layer(router=ROUTERS[router], **VARIANTS[variant])
    x = torch.randn(2, 7, D)
    params = [p for p in moe.parameters() if p.requires_grad]
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, ref = moe(x_fast), _naive(moe, x_ref)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x_fast, *params], upstream)
    grads_ref = torch.autograd.grad(ref, [x_ref, *params], upstream)
    assert moe.gate.weight.requires_grad and moe.experts.gate_proj.requires_grad
    for g_fast, g_ref in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5)
    assert grads_fast[1 + params.index(moe.gate.weight)].abs().sum() > 0  # the router learns through the gates


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_mm", "expert_loop"])
def test_bf16_autocast_keeps_the_router_in_float32(grouped, monkeypatch):
    """Under autocast the experts compute in bf16 like nn.Linear would, the router stays float32: the same
    experts are selected and the output is within bf16 rounding of the float32 one."""
    monkeypatch.setattr(Experts, "use_grouped_mm", grouped)
    moe = _layer(seed=3, router=SigmoidBias())
    x = torch.randn(2, 6, D)
    full = moe(x)
    load = moe.load_since_step.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = moe(x)
    assert half.dtype == torch.bfloat16
    assert torch.equal(moe.load_since_step, 2 * load)  # identical selections
    torch.testing.assert_close(half.float(), full, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("top_k", [1, 2])
def test_capacity_factor_of_e_over_k_equals_dropless(top_k):
    x = torch.randn(3, 5, D)
    dropless = _layer(seed=4, top_k=top_k)(x)
    capped = _layer(seed=4, top_k=top_k, capacity_factor=5 / top_k)
    torch.testing.assert_close(capped(x), dropless, rtol=0, atol=0)
    assert capped.stats["dropped_fraction"] == 0


def test_forced_imbalance_drops_the_overflow_and_dropped_tokens_get_zero():
    moe = _layer(seed=5, top_k=1, capacity_factor=1.0)
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[0, 0] = 10.0  # every token with x_0 > 0 goes to expert 0
    x = torch.randn(2, 10, D)
    x[..., 0] = x[..., 0].abs() + 1.0
    out = moe(x).view(-1, D)
    cap = math.ceil(1 * 20 / 5 * 1.0)
    assert moe.stats["dropped_fraction"].item() == pytest.approx((20 - cap) / 20)
    assert (out[:cap].abs().sum(-1) > 0).all()  # the first `cap` tokens in the flattened order fit
    assert (out[cap:] == 0).all()  # the rest pass through the residual only
    assert moe.non_causal_reason() is not None


def test_balance_loss_through_the_layer():
    """Token i routed to expert i with near certainty (top-1): balanced gives alpha, collapse alpha * E."""
    moe = _layer(top_k=1, aux_loss_weight=0.1, z_loss_weight=0.0)
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[:, :5] = 60.0 * torch.eye(5)
    balanced = torch.zeros(1, 10, D)
    balanced[0, torch.arange(10), torch.arange(10) % 5] = 1.0
    moe(balanced)
    assert moe.aux_loss.item() == pytest.approx(0.1 * 1.0, rel=1e-4)
    collapsed = torch.zeros(1, 10, D)
    collapsed[..., 0] = 1.0
    moe(collapsed)
    assert moe.aux_loss.item() == pytest.approx(0.1 * 5, rel=1e-4)
    assert moe.stats["balance_loss"].item() == pytest.approx(5, rel=1e-4)
    assert moe.stats["load_max_over_mean"].item() == 5 and moe.stats["load_min_over_mean"].item() == 0


def test_z_loss_of_an_all_zero_router_and_computed_in_eval_too():
    moe = _layer(aux_loss_weight=0.0, z_loss_weight=1e-3).eval()
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe(torch.randn(2, 3, D))
    assert moe.aux_loss.item() == pytest.approx(1e-3 * math.log(5) ** 2, rel=1e-6)
    both_off = _layer(aux_loss_weight=0.0, z_loss_weight=0.0)
    both_off(torch.randn(1, 3, D))
    assert both_off.aux_loss is None and "z_loss" in both_off.stats


def test_expert_choice_load_is_exactly_k_and_needs_no_balance_loss():
    moe = _layer(router=ExpertChoice(capacity=2.0), noop_experts=1)
    moe(torch.randn(2, 10, D))
    assert moe.stats["load_max_over_mean"] == 1 and moe.stats["load_min_over_mean"] == 1
    assert "balance_loss" not in moe.stats
    assert moe.non_causal_reason() is not None


def test_bias_update_moves_toward_balance_without_gradient():
    moe = _layer(router=SigmoidBias(bias_update_rate=0.01), top_k=1)
    moe.selection_bias.zero_()
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[0, 0] = 5.0  # expert 0 overloaded
    x = torch.randn(2, 8, D)
    x[..., 0] = x[..., 0].abs() + 1.0
    moe.eval()
    moe(x)
    assert moe.load_since_step.sum() == 0  # evaluation does not count
    moe.train()
    with torch.no_grad():
        moe(x)
    assert moe.load_since_step.sum() == 0  # nor do forwards without gradient
    moe(x[:1]).sum().backward()
    moe(x[1:]).sum().backward()  # two micro-batches of one optimizer step
    load = moe.load_since_step.clone()
    assert load.tolist() == [16, 0, 0, 0, 0]
    assert not moe.selection_bias.requires_grad and moe.selection_bias.grad is None
    moe.after_optimizer_step()
    assert moe.selection_bias.tolist() == pytest.approx([-0.01, 0.01, 0.01, 0.01, 0.01])
    assert moe.load_since_step.sum() == 0
    assert "selection_bias" in moe.state_dict() and "load_since_step" not in moe.state_dict()


def _model_cfg(ffn: MoEFFN, **kw) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 64, "d_model": 32, "n_layers": 2, "n_heads": 2, "ffn_hidden": 48,
                          "ffn": ffn, **kw})


def test_frozen_experts_stay_bitwise_equal_under_adamw():
    torch.manual_seed(6)
    model = _model_cfg(MoEFFN(experts=4, frozen_experts=2)).build()
    frozen = {n: p.clone() for n, p in model.named_parameters() if "frozen" in n}
    assert len(frozen) == 2 * 4 and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    trainable = {n: p.clone() for n, p in model.named_parameters() if "experts.gate_proj" in n}
    opt = torch.optim.AdamW(decay_groups(model, 0.1), lr=1e-2)
    for _ in range(3):
        tokens = torch.randint(0, 64, (2, 9))
        F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).add(model.aux_loss()).backward()
        opt.step()
        opt.zero_grad()
    for name, p in model.named_parameters():
        if name in frozen:
            assert p.grad is None and torch.equal(p, frozen[name]), name
        if name in trainable:
            assert not torch.equal(p, trainable[name]), name


@pytest.mark.parametrize("ffn, causal", [
    (MoEFFN(experts=4, top_k=2), True),
    (MoEFFN(experts=4, top_k=2, router=SigmoidBias(), noop_experts=1, shared_experts=1), True),
    (MoEFFN(experts=4, router=ExpertChoice(capacity=1.0)), False),
    (MoEFFN(experts=4, top_k=1, capacity_factor=0.5), False),
])
def test_whole_model_causality(ffn, causal):
    torch.manual_seed(7)
    model = _model_cfg(ffn).build().eval()
    tokens = torch.randint(0, 64, (2, 24))
    t = 11
    changed = tokens.clone()
    changed[:, t + 1:] = torch.randint(0, 64, (2, 24 - t - 1))
    with torch.no_grad():
        same = torch.allclose(model(tokens)[:, :t + 1], model(changed)[:, :t + 1], rtol=0, atol=1e-6)
    assert same == causal
    assert (model.non_causal_reason() is None) == causal


@pytest.mark.parametrize("ffn", [
    MoEFFN(experts=4, top_k=2),
    MoEFFN(experts=6, top_k=2, every=2, frozen_experts=1, noop_experts=2, shared_experts=1, shared_gate=True,
           expert_hidden=24, router=SigmoidBias()),
    MoEFFN(experts=3, router=ExpertChoice(), expert_hidden=40),
])
def test_param_count_equals_built_model(ffn):
    cfg = _model_cfg(ffn, tie_embeddings=True)
    model = cfg.build()
    assert param_groups(cfg).total == sum(p.numel() for p in model.parameters())


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape, **kwargs) -> int:
    """torch's flop counter has no rule for the grouped matmul: 2 * (output elements) * (contracted length);
    2-D x 2-D (the weight gradient) contracts the jagged dimension, so it is 2 * M * K_total * N."""
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    return 2 * math.prod(out_shape) * a_shape[-1]


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_mm", "expert_loop"])
@pytest.mark.parametrize("ffn", [MoEFFN(experts=4, top_k=2), MoEFFN(experts=8, top_k=2, every=2, shared_experts=1,
                                                                   shared_gate=True, expert_hidden=32)])
def test_training_flops_within_2_percent_of_flop_counter(ffn, grouped, monkeypatch):
    """Dropless token choice without no-op experts: every token meets exactly top_k experts, as counted."""
    monkeypatch.setattr(Experts, "use_grouped_mm", grouped)
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    torch.manual_seed(8)
    _assert_counted_flops_match_the_counter(_model_cfg(ffn, vocab_size=128, d_model=64, n_heads=4, ffn_hidden=64))


@pytest.mark.parametrize("ffn", [MoEFFN(experts=4, top_k=2, router=ExpertChoice(capacity=1.0)),
                                 MoEFFN(experts=4, noop_experts=1, router=ExpertChoice(capacity=3.0))],
                         ids=["capacity_1", "capacity_3_noop"])
def test_expert_choice_training_flops_within_2_percent_of_flop_counter(
        ffn: MoEFFN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expert choice: each expert takes exactly k = N * c / E tokens (N * c / E whole here), so a token meets
    c * (E - no-op) / E real experts on average, as counted; capacity != top_k, so counting by top_k fails."""
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    torch.manual_seed(9)
    _assert_counted_flops_match_the_counter(_model_cfg(ffn, vocab_size=128, d_model=64, n_heads=4, ffn_hidden=64))


def _assert_counted_flops_match_the_counter(cfg: ModelConfig) -> None:
    """One training step of the built model under torch's flop counter, per token, within 2 % of counting."""
    B, T = 2, 32
    model = cfg.build()
    tokens = torch.randint(0, cfg.vocab_size, (B, T + 1))
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten._grouped_mm: _grouped_mm_flops}) as counter:
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    measured = counter.get_total_flops() / (B * T)
    predicted = flops_per_token(cfg, T).training
    assert abs(measured - predicted) / measured < 0.02, (measured, predicted)


def test_training_run_logs_aux_loss_and_load(tmp_path, corpus_dir, cache_dir):
    from isoflop.cli.common import load_experiment
    from isoflop.train.run import run_training
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(corpus_dir, steps=3) + [
        "eval.every=0", "model.ffn.kind=moe", "model.ffn.experts=4", "model.ffn.router.kind=sigmoid_bias"]
    cfg = load_experiment("tiny", overrides)
    with open(os.devnull, "w") as devnull:
        run_training(cfg, tmp_path / "run", stream=devnull)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3
    for r in train:
        assert r["aux_loss"] > 0
        for layer in (0, 1):
            assert r[f"{layer}.ffn.load_max_over_mean"] >= 1.0 >= r[f"{layer}.ffn.load_min_over_mean"]
            assert f"{layer}.ffn.balance_loss" in r and f"{layer}.ffn.dropped_fraction" in r


def test_default_path_takes_grouped_mm_up_to_the_measured_rows_on_cpu(monkeypatch):
    """With no override the CPU takes the grouped matmul up to CPU_GROUPED_MM_MAX_ROWS rows, the loop above,
    and both give the same output."""
    from isoflop.nn import moe as moe_module

    calls = []
    real = F.grouped_mm

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "grouped_mm", counting)
    torch.manual_seed(0)
    experts = Experts(4, 16, 32)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.2)
    limit = moe_module.CPU_GROUPED_MM_MAX_ROWS
    for rows, grouped in ((8, True), (limit, True), (limit + 4, False)):
        if not moe_module.grouped_mm_applies(torch.zeros(1, 16), 32):
            pytest.skip("torch has no CPU grouped matmul here")
        calls.clear()
        x_MD, counts_n = torch.randn(rows, 16), torch.tensor([rows // 4] * 4)
        out = experts(x_MD, counts_n)
        assert bool(calls) == grouped
        experts.use_grouped_mm = not grouped
        assert torch.allclose(experts(x_MD, counts_n), out, atol=1e-5)
        experts.use_grouped_mm = None
