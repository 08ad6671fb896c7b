"""The feed-forward slot of every block, as config classes: the FFN kinds (`dense`, `moe`) and the MoE routers.

Pure Python (no torch): counting and planning read these without building a model; `build()` and `route()`
import torch when called. Each kind carries its own build, its (total, active) parameter count per block and
its Hugging Face mapping (`hf()`: the transformers class and config keys that hold it, or a ConfigError).

`model.ffn.kind = "moe"` puts an MoE layer in every `every`-th block (Hugging Face's `decoder_sparse_step`
convention: block i is sparse when (i + 1) % every == 0); the other blocks keep a dense SwiGLU. Routers are
a variant family under `model.ffn.router.kind`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from isoflop.config import ConfigError, Variant, config, require

if TYPE_CHECKING:
    from torch import Tensor, nn

    from isoflop.nn.routers import Routing

#: The transformers classes our FFN kinds map to (interop/ writes and reads their checkpoints).
LLAMA, MIXTRAL, QWEN2_MOE = "LlamaForCausalLM", "MixtralForCausalLM", "Qwen2MoeForCausalLM"


@dataclass(frozen=True)
class HfFFN:
    """How an FFN config sits in a Hugging Face checkpoint: its class, its config keys and the shape of its MoE
    blocks (what interop/hf_moe.py converts)."""

    architecture: str
    """The transformers class (LLAMA, MIXTRAL or QWEN2_MOE)."""
    config: dict[str, Any]
    """The Hugging Face config keys of the FFN slot."""
    experts: int = 0
    """Routed experts per MoE block (frozen ones first); 0 for a dense model."""
    frozen_experts: int = 0
    """Of those, the frozen ones (merged into the checkpoint: HF has no notion of them)."""
    shared_experts: int = 0
    """Always-on experts per MoE block (Qwen2-MoE holds them as one shared expert)."""
    shared_gate: bool = False
    """Whether the shared experts are gated by sigmoid(w . x)."""


@config
class FFNConfig(Variant, family=True):
    """The feed-forward slot of every block: `model.ffn.kind` picks the variant."""

    default_kind = "dense"

    def build(self, d_model: int, hidden: int, layer: int = 0) -> nn.Module:
        """The FFN of block `layer` (0-based): a kind may place different modules in different blocks."""
        raise NotImplementedError

    def is_sparse(self, layer: int) -> bool:
        """True when block `layer` holds a routed (MoE) FFN."""
        return False

    def params(self, d_model: int, ffn_hidden: int, layer: int) -> tuple[int, int]:
        """(total, active) parameters of block `layer`'s FFN; active: what one token passes through."""
        raise NotImplementedError

    def hf(self, ffn_hidden: int) -> HfFFN:
        """The Hugging Face class holding this FFN; ConfigError (key relative to this config) when none does."""
        raise ConfigError("kind", f"no Hugging Face class holds FFN kind {self.kind!r}")


@config
class DenseFFN(FFNConfig):
    """SwiGLU MLP (Shazeer 2020, arXiv 2002.05202): down(silu(gate(x)) * up(x)). No knobs of its own;
    the hidden width is `model.ffn_hidden`."""

    kind = "dense"

    def build(self, d_model: int, hidden: int, layer: int = 0) -> nn.Module:
        from isoflop.nn.mlp import SwiGLU

        return SwiGLU(d_model, hidden)

    def params(self, d_model: int, ffn_hidden: int, layer: int) -> tuple[int, int]:
        dense = 3 * d_model * ffn_hidden  # gate, up and down projections, no biases
        return dense, dense

    def hf(self, ffn_hidden: int) -> HfFFN:
        return HfFFN(LLAMA, {"intermediate_size": ffn_hidden})


# ----------------------------------------------------------------------------- routers


@config
class RouterConfig(Variant, family=True):
    """How tokens and experts are matched: `model.ffn.router.kind`. Each kind owns its rule (`route`, torch code
    in nn/routers.py) and what the MoE layer, counting and export ask of it."""

    default_kind = "softmax_topk"

    #: True when the selection of a token depends only on that token (needed for sampling)
    token_choice: ClassVar[bool] = True
    #: True when every expert's router row takes a share of each token's scores (softmax): new rows then scale
    #: the old experts' scores, which can reorder old experts whose selection biases differ (surgery/expand.py)
    shares_scores: ClassVar[bool] = False

    def route(self, logits_NE: Tensor, *, top_k: int, capacity_factor: float | None = None,
              selection_bias_E: Tensor | None = None) -> Routing:
        """Assignments of the N tokens to the E experts from float32 router logits (N, E)."""
        raise NotImplementedError

    @property
    def uses_selection_bias(self) -> bool:
        """True when the router keeps a per-expert selection bias (a buffer, moved after each optimizer step)."""
        return False

    def bias_rate(self) -> float:
        """The step of the selection-bias update (0 when there is no bias)."""
        return 0.0

    def experts_per_token(self, top_k: int) -> float:
        """Experts a token meets on average (counting's active parameters)."""
        return top_k

    def non_causal_reason(self) -> str | None:
        """Why the rule looks at other tokens of the batch (so it cannot sample), or None."""
        return None

    def hf_norm_topk_prob(self) -> bool:
        """Hugging Face's `norm_topk_prob` of this router; ConfigError when no HF MoE class routes this way."""
        raise ConfigError("kind", f"Mixtral and Qwen2-MoE route by softmax top-k; no Hugging Face class holds "
                                  f"{self.kind!r}")

    def entering(self, rate: float) -> RouterConfig:
        """This router for lifelong expansion (surgery/expand.py): new experts enter through a selection bias
        that starts below every old one and moves by `rate` per step. ConfigError (the problem, keyed relative to
        this config) when the kind cannot keep new experts out until then."""
        raise ConfigError("kind", f"{self.kind!r} routing has no selection bias to keep new experts out")


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

    def route(self, logits_NE: Tensor, *, top_k: int, capacity_factor: float | None = None,
              selection_bias_E: Tensor | None = None) -> Routing:
        from isoflop.nn import routers

        routing = routers.softmax_topk(logits_NE, top_k, renormalize=self.renormalize, bias_E=selection_bias_E)
        return routers.apply_capacity(routing, logits_NE, top_k, capacity_factor)

    @property
    def uses_selection_bias(self) -> bool:
        return self.bias_update_rate > 0

    def bias_rate(self) -> float:
        return self.bias_update_rate

    shares_scores: ClassVar[bool] = True

    def entering(self, rate: float) -> RouterConfig:
        if not self.renormalize:
            raise ConfigError("renormalize", "un-renormalised softmax gates would change with the new experts' "
                                             "share of the softmax; expansion needs renormalize=true")
        return dataclasses.replace(self, bias_update_rate=rate)

    def hf_norm_topk_prob(self) -> bool:
        if self.uses_selection_bias:
            raise ConfigError("bias_update_rate", "a selection bias (aux-loss-free balancing) has no place in "
                                                  "Mixtral or Qwen2-MoE")
        return self.renormalize


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

    def __post_init__(self) -> None:
        require(self.bias_update_rate >= 0, "bias_update_rate", f"must be >= 0, got {self.bias_update_rate}")

    def route(self, logits_NE: Tensor, *, top_k: int, capacity_factor: float | None = None,
              selection_bias_E: Tensor | None = None) -> Routing:
        from isoflop.nn import routers

        if selection_bias_E is None:
            raise ValueError("the sigmoid_bias router selects with the layer's selection bias; none was given")
        routing = routers.sigmoid_bias(logits_NE, top_k, selection_bias_E, renormalize=self.renormalize)
        return routers.apply_capacity(routing, logits_NE, top_k, capacity_factor)

    @property
    def uses_selection_bias(self) -> bool:
        return True

    def bias_rate(self) -> float:
        return self.bias_update_rate

    def entering(self, rate: float) -> RouterConfig:
        return self  # its own bias already moves every step; sigmoid scores are per expert, so nothing reorders


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

    def route(self, logits_NE: Tensor, *, top_k: int, capacity_factor: float | None = None,
              selection_bias_E: Tensor | None = None) -> Routing:
        from isoflop.nn import routers

        return routers.expert_choice(logits_NE, self.capacity)

    def experts_per_token(self, top_k: int) -> float:
        return self.capacity

    def non_causal_reason(self) -> str | None:
        return "expert-choice routing picks tokens by comparing them across the batch (not causal)"

    def entering(self, rate: float) -> RouterConfig:
        raise ConfigError("kind", "expert-choice routing lets experts pick tokens: it has no selection bias to "
                                  "keep new experts out")


# ----------------------------------------------------------------------------- the MoE FFN


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

    def params(self, d_model: int, ffn_hidden: int, layer: int) -> tuple[int, int]:
        """Active: the router, the shared experts and the experts a token meets (`router.experts_per_token`);
        no-op experts cost nothing, so with uniform load a token meets k * (E - noop) / E real ones."""
        if not self.is_sparse(layer):
            return DenseFFN().params(d_model, ffn_hidden, layer)
        expert = 3 * d_model * self.hidden(ffn_hidden)
        real = self.experts - self.noop_experts
        router = d_model * self.experts
        shared = self.shared_experts * expert + (d_model if self.shared_gate else 0)
        active = router + shared + round(self.router.experts_per_token(self.top_k) * real / self.experts * expert)
        return router + shared + real * expert, active

    def non_causal_reason(self) -> str | None:
        """Why this layer's routing depends on the other tokens of the batch, or None."""
        if self.router.non_causal_reason() is not None:
            return self.router.non_causal_reason()
        if self.capacity_factor is not None:
            return ("capacity_factor drops tokens depending on the other tokens of the batch (not causal); "
                    "set model.ffn.capacity_factor=null for dropless routing")
        return None

    # ------------------------------------------------------------------ Hugging Face
    def hf(self, ffn_hidden: int) -> HfFFN:
        """Mixtral for every-block MoE with renormalised softmax top-k and no shared experts; else Qwen2-MoE
        (decoder_sparse_step, shared experts, norm_topk_prob). Key names: transformers' MixtralConfig and
        Qwen2MoeConfig."""
        try:
            renormalize = self.router.hf_norm_topk_prob()
        except ConfigError as e:
            raise e.under("router") from None
        if self.noop_experts:
            raise ConfigError("noop_experts", f"Mixtral and Qwen2-MoE have no no-op experts, got {self.noop_experts}")
        if self.capacity_factor is not None:
            raise ConfigError("capacity_factor", f"Mixtral and Qwen2-MoE are dropless, got {self.capacity_factor} "
                                                 "(null is dropless)")
        hidden = self.hidden(ffn_hidden)
        # router_aux_loss_coef is written as is, though the scales differ: our balance loss gives 1 for a balanced
        # router per MoE layer and the trainer adds the layers; HF's load_balancing_loss_func gives top_k,
        # averaged over layers.
        common = {"num_experts_per_tok": self.top_k, "router_aux_loss_coef": self.aux_loss_weight}
        shape = dict(experts=self.experts, frozen_experts=self.frozen_experts, shared_experts=self.shared_experts,
                     shared_gate=self.shared_gate)
        if self.every == 1 and self.shared_experts == 0 and renormalize:
            return HfFFN(MIXTRAL, common | {"num_local_experts": self.experts, "intermediate_size": hidden,
                                            "router_jitter_noise": 0.0}, **shape)
        return HfFFN(QWEN2_MOE, common | {
            "num_experts": self.experts, "decoder_sparse_step": self.every, "mlp_only_layers": [],
            "norm_topk_prob": renormalize, "moe_intermediate_size": hidden, "intermediate_size": ffn_hidden,
            "shared_expert_intermediate_size": self.shared_experts * hidden}, **shape)

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], architecture: str, *, gated: bool = True) -> MoEFFN:
        """The MoE FFN of a MixtralConfig or Qwen2MoeConfig dict. Qwen2-MoE always gates its shared expert;
        `gated=False` reads it as ungated (export writes an ungated one with an all-zero gate).
        router_jitter_noise is ignored: it only perturbs training."""
        common = dict(top_k=int(hf["num_experts_per_tok"]),
                      aux_loss_weight=float(hf.get("router_aux_loss_coef", 1e-3)))
        if architecture == MIXTRAL:
            return cls(experts=int(hf["num_local_experts"]), every=1, router=SoftmaxTopK(renormalize=True), **common)
        hidden, shared = int(hf["moe_intermediate_size"]), int(hf["shared_expert_intermediate_size"])
        return cls(experts=int(hf["num_experts"]), every=int(hf.get("decoder_sparse_step", 1)), expert_hidden=hidden,
                   shared_experts=shared // hidden, shared_gate=shared > 0 and gated,
                   router=SoftmaxTopK(renormalize=bool(hf.get("norm_topk_prob", False))), **common)
