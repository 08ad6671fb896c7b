"""Mixture-of-Experts FFN and its routers, as config classes (pure Python; `build()` imports torch).

`model.ffn.kind = "moe"` puts an MoE layer in every `every`-th block (Hugging Face's `decoder_sparse_step`
convention: block i is sparse when (i + 1) % every == 0); the other blocks keep a dense SwiGLU.
Routers are a variant family under `model.ffn.router.kind`.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, ClassVar

from isoflop.config import Variant, config, require
from isoflop.nn.config import DenseFFN, FFNConfig

if TYPE_CHECKING:
    from torch import nn


@config
class RouterConfig(Variant, family=True):
    """How tokens and experts are matched: `model.ffn.router.kind`."""

    default_kind = "softmax_topk"

    #: True when the selection of a token depends only on that token (needed for sampling)
    token_choice: ClassVar[bool] = True

    @property
    def uses_selection_bias(self) -> bool:
        """True when the router keeps a per-expert selection bias (a buffer, moved after each optimizer step)."""
        return False


@config
class SoftmaxTopK(RouterConfig):
    """Softmax over all experts, then each token takes its top-k. Renormalised gates are Mixtral's rule;
    un-renormalised ones (gates are the raw top-k probabilities) are Qwen-MoE's and OLMoE's."""

    kind = "softmax_topk"

    renormalize: bool = True
    """Rescale each token's top-k gates to sum to 1 (Mixtral). False: keep the softmax probabilities."""
    bias_update_rate: float = 0.0
    """> 0: add a per-expert bias to the probabilities for *selection only*, moved by sign(mean load - load) *
    rate after each optimizer step, as the sigmoid_bias router does. `isoflop expand` turns it on: new experts
    start with a bias 1 below the lowest old one (never selected, so outputs on old data are unchanged) and enter
    as their bias rises."""

    def __post_init__(self) -> None:
        require(self.bias_update_rate >= 0, "bias_update_rate", f"must be >= 0, got {self.bias_update_rate}")

    @property
    def uses_selection_bias(self) -> bool:
        return self.bias_update_rate > 0


@config
class SigmoidBias(RouterConfig):
    """Sigmoid scores; a per-expert bias, not trained by gradients, is added for *selection only* and moved
    by sign(mean load - load) * bias_update_rate after each optimizer step (DeepSeek's aux-loss-free
    balancing, Wang et al. 2024, arXiv 2408.15664). Gates are the selected sigmoid scores, renormalised."""

    kind = "sigmoid_bias"

    bias_update_rate: float = 1e-3
    """Step of the bias update (DeepSeek-V3 / torchtitan default 1e-3)."""
    renormalize: bool = True
    """Rescale each token's selected sigmoid scores to sum to 1 (DeepSeek-V3)."""

    @property
    def uses_selection_bias(self) -> bool:
        return True

    def __post_init__(self) -> None:
        require(self.bias_update_rate >= 0, "bias_update_rate", f"must be >= 0, got {self.bias_update_rate}")


@config
class ExpertChoice(RouterConfig):
    """Each expert takes its top k = tokens * capacity / experts tokens of the batch (Zhou et al. 2022): perfect
    balance with no aux loss, but a token's experts depend on the other tokens, so it is not causal."""

    kind = "expert_choice"
    token_choice: ClassVar[bool] = False

    capacity: float = 2.0
    """c: the average number of experts per token (the paper's default 2)."""

    def __post_init__(self) -> None:
        require(self.capacity > 0, "capacity", f"must be positive, got {self.capacity}")


@config
class MoEFFN(FFNConfig):
    """Mixture of SwiGLU experts (Shazeer et al. 2017; Fedus et al. 2021), dispatched by sorting tokens by
    expert and batched expert matmuls."""

    kind = "moe"

    experts: int = 8
    """E: routed experts per MoE layer (including `noop_experts`)."""
    top_k: int = 2
    """Experts per token for the token-choice routers (expert choice uses router.capacity instead)."""
    every: int = 1
    """MoE in block i when (i + 1) % every == 0 (1: every block, Mixtral; 2: every other, GLaM/upcycling);
    the other blocks keep the dense SwiGLU of width model.ffn_hidden."""
    expert_hidden: int | None = None
    """Hidden width of each expert. None: model.ffn_hidden (what sparse upcycling copies)."""
    shared_experts: int = 0
    """Always-on experts of width expert_hidden each, added to the routed output (DeepSeekMoE, Qwen2-MoE)."""
    shared_gate: bool = False
    """Scale the shared experts' output by sigmoid(w . x), Qwen2-MoE's shared_expert_gate."""
    noop_experts: int = 0
    """Of the `experts`, this many return zero (integrated MoDE, Raposo et al. 2024): a token routed there
    skips the FFN through the residual."""
    capacity_factor: float | None = None
    """Token slots per expert = ceil(top_k * tokens / experts * capacity_factor); overflowing tokens are dropped
    (zero MoE output, residual only). None: dropless."""
    aux_loss_weight: float = 1e-2
    """alpha of the Switch load-balancing loss alpha * E * sum_i f_i * P_i, with f_i normalised by top_k * tokens
    so a balanced router gives alpha * 1 (Fedus et al. 2021: 1e-2). 0 disables it."""
    z_loss_weight: float = 1e-3
    """c_z of the router z-loss mean(logsumexp(logits)^2) (ST-MoE, Zoph et al. 2022: 1e-3). 0 disables it."""
    frozen_experts: int = 0
    """The first this-many experts and their router rows are frozen (lifelong expansion): parameters with
    requires_grad=False (counted in the model's parameters, never updated by the optimizer)."""
    router: RouterConfig = field(default_factory=SoftmaxTopK)
    """How tokens are matched to experts."""

    def __post_init__(self) -> None:
        require(self.experts >= 1, "experts", f"must be >= 1, got {self.experts}")
        require(1 <= self.top_k <= self.experts, "top_k", f"must be in 1..experts={self.experts}, got {self.top_k}")
        require(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        require(self.expert_hidden is None or self.expert_hidden > 0, "expert_hidden",
                f"must be positive, got {self.expert_hidden}")
        require(self.shared_experts >= 0, "shared_experts", f"must be >= 0, got {self.shared_experts}")
        require(not self.shared_gate or self.shared_experts > 0, "shared_gate", "needs shared_experts > 0")
        require(0 <= self.noop_experts < self.experts, "noop_experts",
                f"must be in 0..experts-1={self.experts - 1}, got {self.noop_experts}")
        require(self.capacity_factor is None or self.capacity_factor > 0, "capacity_factor",
                f"must be positive or None (dropless), got {self.capacity_factor}")
        require(self.aux_loss_weight >= 0, "aux_loss_weight", f"must be >= 0, got {self.aux_loss_weight}")
        require(self.z_loss_weight >= 0, "z_loss_weight", f"must be >= 0, got {self.z_loss_weight}")
        require(0 <= self.frozen_experts < self.experts, "frozen_experts",
                f"must be in 0..experts-1={self.experts - 1}, got {self.frozen_experts}")
        require(self.frozen_experts + self.noop_experts < self.experts, "frozen_experts",
                f"frozen_experts + noop_experts must leave a trainable expert of the {self.experts}")
        require(self.capacity_factor is None or self.router.token_choice, "capacity_factor",
                "applies to token-choice routers only (expert choice sets its load by router.capacity)")

    def is_sparse(self, layer: int) -> bool:
        return (layer + 1) % self.every == 0

    def hidden(self, ffn_hidden: int) -> int:
        """Each expert's hidden width, given the model's dense ffn_hidden."""
        return self.expert_hidden if self.expert_hidden is not None else ffn_hidden

    def build(self, d_model: int, hidden: int, layer: int = 0) -> nn.Module:
        if not self.is_sparse(layer):
            return DenseFFN().build(d_model, hidden, layer)
        from isoflop.nn.moe import MoE

        return MoE(self, d_model, self.hidden(hidden))
