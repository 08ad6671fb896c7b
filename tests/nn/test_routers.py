"""Router rules against their definitions: gating variants, capacity ranks, balance and z losses, expert choice."""

from __future__ import annotations

import math

import pytest
import torch

from isoflop.nn import routers
from isoflop.nn.ffn_config import ExpertChoice, SoftmaxTopK


def _gates_by_token(routing, n):
    out = [dict() for _ in range(n)]
    for t, e, g in zip(routing.token_A.tolist(), routing.expert_A.tolist(), routing.gate_A.tolist(), strict=True):
        out[t][e] = g
    return out


def test_softmax_topk_renormalised_equals_topk_then_softmax():
    """Mixtral's softmax -> top-k -> renormalise is LitGPT's top-k logits -> softmax."""
    torch.manual_seed(0)
    logits = torch.randn(10, 6)
    routing = routers.softmax_topk(logits, 2, renormalize=True)
    top_logits, top_idx = logits.topk(2, dim=-1)
    expected = top_logits.softmax(-1)
    for t, gates in enumerate(_gates_by_token(routing, 10)):
        assert list(gates) == top_idx[t].tolist()
        assert torch.allclose(torch.tensor(list(gates.values())), expected[t], atol=1e-6)


def test_softmax_topk_without_renormalisation_keeps_probabilities():
    """Qwen-MoE / OLMoE: the gates are the top-k entries of the full softmax (they sum to less than 1)."""
    torch.manual_seed(1)
    logits = torch.randn(10, 6)
    probs = logits.softmax(-1)
    routing = routers.softmax_topk(logits, 3, renormalize=False)
    for t, gates in enumerate(_gates_by_token(routing, 10)):
        for e, g in gates.items():
            assert g == pytest.approx(probs[t, e].item(), abs=1e-7)
        assert set(gates) == set(probs[t].topk(3).indices.tolist())


@pytest.mark.parametrize("renormalize", [True, False])
def test_sigmoid_bias_changes_selection_not_gates(renormalize):
    """A bias favouring experts 4 and 5 makes every token select them; the gates stay the unbiased
    sigmoid scores (renormalised over the selected two when asked)."""
    torch.manual_seed(2)
    logits = torch.randn(8, 6)
    bias = torch.tensor([0.0, 0, 0, 0, 5.0, 5.0])
    routing = routers.sigmoid_bias(logits, 2, bias, renormalize=renormalize)
    scores = logits.sigmoid()
    for t, gates in enumerate(_gates_by_token(routing, 8)):
        assert set(gates) == {4, 5}
        denominator = scores[t, 4] + scores[t, 5] if renormalize else 1.0
        for e, g in gates.items():
            assert g == pytest.approx(float(scores[t, e] / denominator), abs=1e-7)
    assert torch.allclose(routing.probs_NE, scores / scores.sum(-1, keepdim=True))


def test_within_capacity_keeps_the_first_assignments_of_each_expert():
    expert_A = torch.tensor([0, 1, 0, 2, 0, 1, 0, 0])
    kept = routers.within_capacity(expert_A, 3, slots=2)
    assert kept.tolist() == [True, True, True, True, False, True, False, False]


def test_capacity_formula_is_megatrons():
    assert routers.expert_capacity(n_tokens=10, n_experts=4, top_k=2, capacity_factor=1.25) == math.ceil(2 * 10 / 4 * 1.25)
    assert routers.expert_capacity(n_tokens=12, n_experts=4, top_k=1, capacity_factor=1.0) == 3


def test_capacity_dropping_counts_overflow():
    """Forced imbalance: dropped = sum_e max(0, load_e - capacity)."""
    logits = torch.zeros(12, 4)
    logits[:, 0] = 5.0  # every token's first choice is expert 0
    logits[:6, 1] = 3.0
    routing = SoftmaxTopK().route(logits, top_k=2, capacity_factor=1.0)
    cap = routers.expert_capacity(12, 4, 2, 1.0)
    expected = sum(max(0, load - cap) for load in routing.selected_E.tolist())
    assert expected > 0
    assert int((~routing.kept_A).sum()) == expected


def test_balance_loss_is_one_when_balanced_and_e_when_collapsed():
    n, e = 12, 4
    uniform = torch.full((n, e), 1 / e)
    balanced = torch.full((e,), n // e)  # top-1, each expert gets N / E tokens
    assert routers.balance_loss(uniform, balanced, top_k=1).item() == pytest.approx(1.0)
    top2 = torch.full((e,), 2 * n // e)
    assert routers.balance_loss(uniform, top2, top_k=2).item() == pytest.approx(1.0)
    collapsed_probs = torch.zeros(n, e)
    collapsed_probs[:, 0] = 1.0
    collapsed = torch.tensor([n, 0, 0, 0])
    assert routers.balance_loss(collapsed_probs, collapsed, top_k=1).item() == pytest.approx(e)


def test_balance_loss_gradient_flows_through_the_full_softmax():
    """P_i averages the softmax over all experts, so the logits of experts nobody selected get gradient."""
    logits = torch.zeros(6, 4, requires_grad=True)
    routing = routers.softmax_topk(logits, 1, renormalize=True)
    routers.balance_loss(routing.probs_NE, torch.tensor([6, 0, 0, 0]), 1).backward()
    assert (logits.grad[:, 1:] != 0).all()


def test_z_loss_of_zero_logits_is_ln_e_squared():
    assert routers.z_loss(torch.zeros(5, 8)).item() == pytest.approx(math.log(8) ** 2, rel=1e-6)


@pytest.mark.parametrize("capacity, k", [(2.0, 6), (1.0, 3), (0.1, 1)])
def test_expert_choice_gives_each_expert_exactly_k_tokens(capacity, k):
    torch.manual_seed(3)
    logits = torch.randn(12, 4)
    routing = ExpertChoice(capacity=capacity).route(logits, top_k=2, capacity_factor=None)
    assert torch.bincount(routing.expert_A, minlength=4).tolist() == [k] * 4
    probs = logits.softmax(-1)
    for e in range(4):
        mine = routing.token_A[routing.expert_A == e]
        assert set(mine.tolist()) == set(probs[:, e].topk(k).indices.tolist())
        assert torch.allclose(routing.gate_A[routing.expert_A == e], probs[mine, e])
    assert routing.probs_NE is None
