"""Mixture-of-Experts FFN: a router, SwiGLU experts held as 3-D weights, optional shared experts.

Dispatch sorts the kept (token, expert) assignments by expert, gathers the tokens into one contiguous
(M, D) block and runs every expert on its slice with a grouped matmul (`torch.nn.functional.grouped_mm`,
one kernel for all experts) or a loop over the E experts: the loop where that kernel does not apply, and on
the CPU also above a measured number of rows (`prefer_grouped_mm`). Outputs are weighted by their gates and
summed back per token with `index_add`. No expert is padded to the largest load, so the matmul FLOPs are
exactly the active ones (nn/counting.py).

Expert order: frozen experts 0..F-1 (lifelong expansion: weights and router rows without gradient), then the
trainable ones, then the no-op experts (integrated MoDE: no weights, output exactly zero).

Shape legend
    B batch, T sequence, D d_model, N = B * T tokens, E experts (all), R experts with weights (E - no-op),
    H expert hidden width, A assignments, M kept assignments to experts with weights (sorted by expert)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.nn.contract import RoutedModule
from isoflop.nn.mlp import SwiGLU
from isoflop.nn.routers import Routing, balance_loss, z_loss

if TYPE_CHECKING:
    from isoflop.nn.ffn_config import MoEFFN


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype nn.Linear would compute in here: autocast's when it is on, else the input's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def grouped_mm_applies(x: torch.Tensor, hidden: int) -> bool:
    """Whether torch's grouped matmul runs on this input: float32/bf16 on the CPU, bf16 on CUDA SM >= 8.0, with
    rows of D and H a multiple of 16 bytes (the kernel's stride rule). Under torch.compile bf16 only: the
    operator's shape function (torch 2.13) rejects float32."""
    if x.device.type == "cpu":
        ok_dtype = x.dtype == torch.bfloat16 or (x.dtype == torch.float32 and not torch.compiler.is_compiling())
    elif x.device.type == "cuda":
        ok_dtype = x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    else:
        ok_dtype = False
    per_16_bytes = 16 // x.element_size()
    return ok_dtype and x.shape[-1] % per_16_bytes == 0 and hidden % per_16_bytes == 0


#: Measured on CPU fp32, E = 8, top-2, forward + backward of the layer (benchmarks/moe_dispatch.py --sweep,
#: D 128..1024, H = 2D; LOG.md 2026-11-22): the grouped matmul ran 1.03-1.5x the per-expert loop up to 1,024
#: tokens (2,048 rows) in every run; from 2,048 tokens on, the loop ran as fast or faster with one thread
#: (0.71-1.07x), while two threads on the shared machine scattered (0.9-1.6x). The crossover did not move
#: clearly with D or H, so the rule is on rows alone. bf16 on the CPU was not measured; it follows fp32.
CPU_GROUPED_MM_MAX_ROWS = 2048


def prefer_grouped_mm(rows: int, device: torch.device) -> bool:
    """Whether to take the grouped matmul over the per-expert loop, where both can run, for `rows` dispatched
    (token, expert) assignments (about top_k * tokens). CUDA: always (one kernel against E launches). CPU: up
    to CPU_GROUPED_MM_MAX_ROWS. torch's CPU kernel loops over the groups itself, so the matmuls cost the same;
    what differs is the SiLU and product over the (M, H) intermediate, which the loop does per expert slice
    while it is still in cache (profiled at 8,192 tokens, D 256: those element-wise ops took about twice as
    long over the whole block), against the loop's per-expert overhead, which dominates at few rows."""
    if device.type != "cpu":
        return True
    return rows <= CPU_GROUPED_MM_MAX_ROWS


class Experts(nn.Module):
    """n SwiGLU experts as 3-D weights; each slice is in nn.Linear layout, so `gate_proj[e]` is expert e's
    `gate_proj.weight` of a dense SwiGLU (what sparse upcycling copies and HF export writes)."""

    #: None: the grouped matmul where it applies (grouped_mm_applies) and is preferred (prefer_grouped_mm),
    #: else the per-expert loop; True/False force a path (tests, benchmarks)
    use_grouped_mm: bool | None = None

    def __init__(self, n: int, d_model: int, hidden: int, *, trainable: bool = True):
        super().__init__()
        self.n, self.hidden = n, hidden
        self.gate_proj = nn.Parameter(torch.empty(n, hidden, d_model), requires_grad=trainable)
        self.up_proj = nn.Parameter(torch.empty(n, hidden, d_model), requires_grad=trainable)
        self.down_proj = nn.Parameter(torch.empty(n, d_model, hidden), requires_grad=trainable)

    @torch.no_grad()
    def reset_parameters(self, std: float, residual_std: float) -> None:
        """Called by TransformerLM.init_weights: the dense SwiGLU's rule (down_proj feeds the residual)."""
        nn.init.normal_(self.gate_proj, 0.0, std)
        nn.init.normal_(self.up_proj, 0.0, std)
        nn.init.normal_(self.down_proj, 0.0, residual_std)

    def forward(self, x_MD: torch.Tensor, counts_n: torch.Tensor) -> torch.Tensor:
        """Expert e on rows [sum(counts[:e]), sum(counts[:e+1])) of x, which the caller sorted by expert."""
        dtype = _compute_dtype(x_MD)
        x_MD = x_MD.to(dtype)
        gate_nHD, up_nHD, down_nDH = (w.to(dtype) for w in (self.gate_proj, self.up_proj, self.down_proj))
        grouped = self.use_grouped_mm
        if grouped is None:
            # under torch.compile M is data-dependent: no branch on it; one grouped kernel keeps the graph whole
            grouped = grouped_mm_applies(x_MD, self.hidden) and (
                torch.compiler.is_compiling() or prefer_grouped_mm(x_MD.shape[0], x_MD.device))
        if grouped:
            offs_n = torch.cumsum(counts_n, 0).to(torch.int32)
            g_MH = F.grouped_mm(x_MD, gate_nHD.transpose(-2, -1), offs=offs_n)
            u_MH = F.grouped_mm(x_MD, up_nHD.transpose(-2, -1), offs=offs_n)
            return F.grouped_mm(F.silu(g_MH) * u_MH, down_nDH.transpose(-2, -1), offs=offs_n)
        outputs = []
        # unbind, not gate_nHD[e]: indexing's backward writes a zero-filled (n, H, D) gradient per expert and sums
        # them (experts alone, 512 rows, D 512, H 1,024, CPU: 3x slower fwd+bwd); unbind's backward stacks once
        weights = zip(gate_nHD.unbind(0), up_nHD.unbind(0), down_nDH.unbind(0), strict=True)
        # a loop over experts (not tokens): each runs on its contiguous slice, so FLOPs are the active ones
        for x_mD, (gate_HD, up_HD, down_DH) in zip(torch.split(x_MD, counts_n.tolist()), weights, strict=True):
            if x_mD.shape[0]:
                outputs.append(F.linear(F.silu(F.linear(x_mD, gate_HD)) * F.linear(x_mD, up_HD), down_DH))
        return torch.cat(outputs) if outputs else x_MD.new_zeros(0, down_nDH.shape[1])


class MoE(RoutedModule):
    """The MoE FFN slot (a RoutedModule, nn/contract.py). Sets on each forward `aux_loss` (the weighted balance
    and z losses, or None) and `stats` (detached scalars): load_max_over_mean and load_min_over_mean (router
    selections per expert over their mean, before capacity dropping), dropped_fraction (assignments dropped by
    capacity over top_k * N), balance_loss and z_loss (unweighted; balance_loss is absent for expert choice,
    whose load is balanced by construction)."""

    def __init__(self, cfg: MoEFFN, d_model: int, expert_hidden: int):
        super().__init__()
        self.cfg = cfg
        n_frozen, n_noop = cfg.frozen_experts, cfg.noop_experts
        self.n_weighted = cfg.experts - n_noop  # R: experts with weights, frozen included
        self.gate = nn.Linear(d_model, cfg.experts - n_frozen, bias=False)
        self.experts = Experts(self.n_weighted - n_frozen, d_model, expert_hidden)
        if n_frozen:
            self.gate_frozen = nn.Parameter(torch.empty(n_frozen, d_model), requires_grad=False)
            self.experts_frozen = Experts(n_frozen, d_model, expert_hidden, trainable=False)
        self.shared = SwiGLU(d_model, cfg.shared_experts * expert_hidden) if cfg.shared_experts else None
        self.shared_gate = nn.Linear(d_model, 1, bias=False) if cfg.shared_gate else None
        bias = torch.zeros(cfg.experts) if cfg.router.uses_selection_bias else None
        self.register_buffer("selection_bias", bias)  # persistent: resume must select the same experts
        self.register_buffer("load_since_step", torch.zeros(cfg.experts, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def reset_parameters(self, std: float, residual_std: float) -> None:
        """The frozen router rows, which nn.Linear's initialisation does not reach."""
        if self.cfg.frozen_experts:
            nn.init.normal_(self.gate_frozen, 0.0, std)

    def router_weight(self) -> torch.Tensor:
        """(E, D): the frozen experts' rows first, then the trainable ones."""
        if self.cfg.frozen_experts:
            return torch.cat([self.gate_frozen, self.gate.weight])
        return self.gate.weight

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
        with torch.autocast(x_ND.device.type, enabled=False):  # router math in float32 (Fedus et al. 2021)
            logits_NE = F.linear(x_ND.float(), self.router_weight().float())
            routing = self.cfg.router.route(logits_NE, top_k=self.cfg.top_k, capacity_factor=self.cfg.capacity_factor,
                                            selection_bias_E=self.selection_bias)
            self._losses_and_stats(logits_NE, routing)
        out_ND = self._dispatch(x_ND, routing)
        if self.shared is not None:
            shared_ND = self.shared(x_ND)
            if self.shared_gate is not None:
                shared_ND = torch.sigmoid(self.shared_gate(x_ND)) * shared_ND
            out_ND = out_ND + shared_ND
        return out_ND.view(x_BTD.shape)

    def _dispatch(self, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Sum over each token's kept assignments of gate * expert(x); no-op and dropped ones add nothing."""
        token_A, expert_A, gate_A = routing.token_A, routing.expert_A, routing.gate_A
        if self.cfg.capacity_factor is not None or self.n_weighted < self.cfg.experts:  # else all are real
            real_A = torch.nonzero(routing.kept_A & (expert_A < self.n_weighted)).squeeze(-1)
            token_A, expert_A, gate_A = token_A[real_A], expert_A[real_A], gate_A.index_select(0, real_A)
        order_M = torch.argsort(expert_A, stable=True)
        token_M = token_A[order_M]
        counts_R = torch.bincount(expert_A, minlength=self.n_weighted)
        # index_select, not x_ND[token_M]: its backward is an index_add (a scatter-add), where indexing's is an
        # accumulating index_put, 8x slower on the CPU (4,096 tokens, D 128, top-2: 6.1 ms against 0.73 ms)
        x_MD = x_ND.index_select(0, token_M)
        n_frozen = self.cfg.frozen_experts
        if n_frozen:
            split = int(counts_R[:n_frozen].sum())
            y_MD = torch.cat([self.experts_frozen(x_MD[:split], counts_R[:n_frozen]),
                              self.experts(x_MD[split:], counts_R[n_frozen:])])
        else:
            y_MD = self.experts(x_MD, counts_R)
        weighted_MD = y_MD * gate_A.index_select(0, order_M).to(y_MD.dtype).unsqueeze(-1)
        return weighted_MD.new_zeros(x_ND.shape[0], weighted_MD.shape[1]).index_add(0, token_M, weighted_MD)

    def _losses_and_stats(self, logits_NE: torch.Tensor, routing: Routing) -> None:
        cfg = self.cfg
        z = z_loss(logits_NE)
        aux = cfg.z_loss_weight * z if cfg.z_loss_weight > 0 else None
        stats = {"z_loss": z.detach()}
        if routing.probs_NE is not None:  # token choice: expert choice is balanced by construction
            balance = balance_loss(routing.probs_NE, routing.selected_E, cfg.top_k)
            stats["balance_loss"] = balance.detach()
            if cfg.aux_loss_weight > 0:
                weighted = cfg.aux_loss_weight * balance
                aux = weighted if aux is None else aux + weighted
        load_E = routing.selected_E.float()
        stats["load_max_over_mean"] = load_E.max() / load_E.mean()
        stats["load_min_over_mean"] = load_E.min() / load_E.mean()
        stats["dropped_fraction"] = (~routing.kept_A).sum().float() / routing.kept_A.numel()
        self.aux_loss, self.stats = aux, stats
        if self.training and torch.is_grad_enabled():  # training forwards only: not evaluation, not sampling
            self.load_since_step += routing.selected_E

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Aux-loss-free balancing: bias += rate * sign(mean load - load) over the step's load (summed across
        ranks by the trainer), then reset the counter. The bias only moves selection, never the gates. Frozen
        experts' biases stay put, so the routes to them (lifelong expansion's old knowledge) keep their rule."""
        if self.selection_bias is not None and int(self.load_since_step.sum()) > 0:
            load_E = self.load_since_step.to(self.selection_bias.dtype)
            step_E = self.cfg.router.bias_rate() * torch.sign(load_E.mean() - load_E)
            step_E[: self.cfg.frozen_experts] = 0
            self.selection_bias += step_E
        self.load_since_step.zero_()

    def load_buffers(self) -> list[torch.Tensor]:
        return [self.load_since_step]

    def non_causal_reason(self) -> str | None:
        return self.cfg.non_causal_reason()
