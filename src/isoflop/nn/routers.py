"""The routing rules of the MoE layer (torch): which experts each token meets, with which gate, and the
balancing losses. Each router kind (nn/ffn_config.py) calls its rule from its own `route()`.

Every function here works on the flattened batch and in float32 (the caller passes float32 logits).

Shape legend
    N  tokens of the flattened batch (B * T)
    E  experts, all of them: frozen (0..F-1), trainable, then the no-op ones (the last indices)
    K  experts per token (top_k) for the token-choice routers
    A  (token, expert) assignments; token-major for token choice (token 0's K picks, then token 1's, ...),
       expert-major for expert choice
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Routing:
    token_A: torch.Tensor
    """Token index of each assignment (long)."""
    expert_A: torch.Tensor
    """Expert index of each assignment (long)."""
    gate_A: torch.Tensor
    """Weight of the expert's output for that token (float32, in the graph: the router's gradient path)."""
    kept_A: torch.Tensor
    """False where capacity dropped the assignment (its token gets nothing from that expert)."""
    selected_E: torch.Tensor
    """Assignments per expert before capacity dropping (long, no gradient): the router's load."""
    probs_NE: torch.Tensor | None
    """Per-token distribution over all experts for the balance loss's P_i (rows sum to 1); None when the
    router needs no balance loss (expert choice)."""


def token_choice_routing(idx_NK: torch.Tensor, gate_NK: torch.Tensor, probs_NE: torch.Tensor) -> Routing:
    """The Routing of a token-choice rule from each token's K picks and gates, token-major, all kept;
    `probs_NE` is the distribution the balance loss averages."""
    n, k = idx_NK.shape
    expert_A = idx_NK.reshape(-1)
    token_A = torch.arange(n, device=idx_NK.device).repeat_interleave(k)
    selected_E = torch.bincount(expert_A, minlength=probs_NE.shape[1])
    return Routing(token_A=token_A, expert_A=expert_A, gate_A=gate_NK.reshape(-1),
                   kept_A=torch.ones_like(expert_A, dtype=torch.bool), selected_E=selected_E, probs_NE=probs_NE)


def apply_capacity(routing: Routing, logits_NE: torch.Tensor, top_k: int, capacity_factor: float | None) -> Routing:
    """A token-choice routing with the assignments past each expert's capacity dropped (`kept_A` False);
    unchanged when `capacity_factor` is None (dropless)."""
    if capacity_factor is not None:
        n, e = logits_NE.shape
        routing.kept_A = within_capacity(routing.expert_A, e, expert_capacity(n, e, top_k, capacity_factor))
    return routing


def softmax_topk(logits_NE: torch.Tensor, top_k: int, *, renormalize: bool,
                 bias_E: torch.Tensor | None = None) -> Routing:
    """Softmax over all experts, each token's top-k; gates renormalised to sum 1 (Mixtral) or kept (Qwen).
    `bias_E`, when given, is added to the probabilities to choose the experts, not to the gates."""
    if logits_NE.device.type == "cpu":
        # over dim 0 of the (E, N) view: torch's CPU softmax is slow on a short last dim (4,096 x 8, 2 threads:
        # 87 against 325 us forward; the router's forward + backward 0.75 against 1.04 ms; LOG.md 2026-11-22)
        probs_NE = logits_NE.t().softmax(dim=0).t()
    else:
        probs_NE = logits_NE.softmax(dim=-1)
    if bias_E is None:
        gate_NK, idx_NK = probs_NE.topk(top_k, dim=-1)
    else:
        idx_NK = (probs_NE.detach() + bias_E.to(probs_NE.dtype)).topk(top_k, dim=-1).indices
        gate_NK = probs_NE.gather(-1, idx_NK)
    if renormalize:
        gate_NK = gate_NK / gate_NK.sum(dim=-1, keepdim=True)
    return token_choice_routing(idx_NK, gate_NK, probs_NE)


def sigmoid_bias(logits_NE: torch.Tensor, top_k: int, bias_E: torch.Tensor, *, renormalize: bool) -> Routing:
    """Sigmoid scores; the bias shifts which experts are *selected*, the gates are the unbiased scores
    (Wang et al. 2024, arXiv 2408.15664). The balance loss's P_i uses the scores normalised to sum 1 per
    token, so it keeps the Switch scale (balanced: 1, collapse: E)."""
    scores_NE = logits_NE.sigmoid()
    idx_NK = (scores_NE.detach() + bias_E.to(scores_NE.dtype)).topk(top_k, dim=-1).indices
    gate_NK = scores_NE.gather(-1, idx_NK)
    if renormalize:
        gate_NK = gate_NK / gate_NK.sum(dim=-1, keepdim=True)
    return token_choice_routing(idx_NK, gate_NK, scores_NE / scores_NE.sum(dim=-1, keepdim=True))


def expert_choice(logits_NE: torch.Tensor, capacity: float) -> Routing:
    """S = softmax over experts; each expert takes its top k = max(1, floor(N * c / E)) tokens of the whole
    batch, gated by those S values (Zhou et al. 2022). Every expert gets exactly k tokens, so the load is
    balanced by construction and no balance loss is needed; a token may get zero or several experts."""
    n, e = logits_NE.shape
    probs_NE = logits_NE.softmax(dim=-1)
    k = min(n, max(1, math.floor(n * capacity / e)))
    gate_EK, token_EK = probs_NE.t().topk(k, dim=-1)
    expert_A = torch.arange(e, device=logits_NE.device).repeat_interleave(k)
    return Routing(token_A=token_EK.reshape(-1), expert_A=expert_A, gate_A=gate_EK.reshape(-1),
                   kept_A=torch.ones_like(expert_A, dtype=torch.bool),
                   selected_E=torch.full((e,), k, dtype=torch.long, device=logits_NE.device), probs_NE=None)


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Token slots per expert: ceil(top_k * N / E * CF) (Megatron-Core's `get_capacity`)."""
    return math.ceil(top_k * n_tokens / n_experts * capacity_factor)


def within_capacity(expert_A: torch.Tensor, n_experts: int, slots: int) -> torch.Tensor:
    """True for the assignments that fit: each expert keeps its first `slots` assignments in the flattened
    (token-major) order and drops the later ones. Ranks come from a stable sort, not an A x E one-hot."""
    order_A = torch.argsort(expert_A, stable=True)
    counts_E = torch.bincount(expert_A, minlength=n_experts)
    starts_E = torch.cumsum(counts_E, 0) - counts_E
    rank_A = torch.empty_like(expert_A)
    rank_A[order_A] = torch.arange(expert_A.numel(), device=expert_A.device) - starts_E[expert_A[order_A]]
    return rank_A < slots


def balance_loss(probs_NE: torch.Tensor, selected_E: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch load balancing E * sum_i f_i * P_i (Fedus et al. 2021), with f_i = assignments to i / (top_k * N)
    as Megatron-Core normalises it, so a balanced router gives 1 and top-1 collapse gives E (Hugging Face's
    `load_balancing_loss_func` gives top_k when balanced). P_i is the mean of the full distribution over all
    experts; f_i has no gradient."""
    n, e = probs_NE.shape
    f_E = selected_E.to(probs_NE.dtype) / (top_k * n)
    return e * (f_E * probs_NE.mean(dim=0)).sum()


def z_loss(logits_NE: torch.Tensor) -> torch.Tensor:
    """Router z-loss mean(logsumexp(logits)^2) (ST-MoE, Zoph et al. 2022): keeps the logits small."""
    return torch.logsumexp(logits_NE, dim=-1).square().mean()
