"""The model's configuration: shape, the slots of each block, and the initialisation.

Pure Python (no torch): counting and planning read it without building a model; `build()` imports torch.
Each slot is a variant family that answers for itself (build, counting, Hugging Face mapping): the FFN and
its routers (ffn_config.py), Mixture of Depths (mod_config.py), RoPE (rope.py), the attention layout
(layout_config.py) and the tied head's initialisation (head_config.py).
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING

from isoflop.config import Config, config, require
from isoflop.nn.ffn_config import DenseFFN, FFNConfig
from isoflop.nn.head_config import NormalTiedInit, TiedInit
from isoflop.nn.layout_config import AttentionLayout, FullLayout
from isoflop.nn.mod_config import MoDConfig, NoMoD
from isoflop.nn.rope import DefaultRope, RopeConfig

if TYPE_CHECKING:
    from torch import nn

    from isoflop.nn.attention_config import LayerAttention


@config
class ModelConfig(Config):
    """A decoder-only, pre-norm, Llama-style transformer."""

    vocab_size: int | None = None
    """Rows of the embedding and output head. None: the tokenizer's vocabulary rounded up to a multiple of 64
    (resolved by ExperimentConfig.resolved_model; a model is only built from a resolved config)."""
    d_model: int = 256
    """Width of the residual stream."""
    n_layers: int = 4
    """Number of transformer blocks."""
    n_heads: int = 4
    """Query heads; must divide d_model. head_dim = d_model / n_heads."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention (Ainslie et al. 2023); must divide n_heads. None: n_heads."""
    ffn_hidden: int | None = None
    """Hidden width of the SwiGLU MLP. None: 8/3 * d_model rounded up to a multiple of 64 (Llama)."""
    ffn: FFNConfig = field(default_factory=DenseFFN)
    """The feed-forward slot of every block: `dense`, or `moe` (nn/ffn_config.py)."""
    mod: MoDConfig = field(default_factory=NoMoD)
    """Mixture of Depths: `none`, or `topk` routing of every other block (nn/mod_config.py)."""
    rope: RopeConfig = field(default_factory=DefaultRope)
    """Rotary position embedding variant (nn/rope.py)."""
    layout: AttentionLayout = field(default_factory=FullLayout)
    """Which layers attend to a window and which to everything: `full` (every layer), `hwfa`, `hwfa2`
    (nn/layout_config.py)."""
    train_length: int | None = None
    """The sequence length the model was trained at (N of HWFA's window rule and log-n, and the original length
    of the dynamic / yarn / llama3 RoPE unless set there). None: resolved by ExperimentConfig.resolved_model from
    data.seq_len, like vocab_size."""
    tie_embeddings: bool = False
    """Share the token embedding with the output head (Press & Wolf 2017)."""
    tied_init: TiedInit = field(default_factory=NormalTiedInit)
    """With tie_embeddings, how the tied model avoids starting as a confident bigram model (Su, kexue.fm 9698):
    `normal` plain Normal(0, init_std); `ln_vocab` the shared matrix gets std ln(V) / d_model, so the initial
    loss is about ln V; `projection` an orthogonally initialised D x D linear (no bias) between the final norm
    and the tied head; `half_swap` the parameter-free swap of the two halves of the normalised vector before
    the tied head. Anything but `normal` needs tie_embeddings (nn/head_config.py)."""
    norm_eps: float = 1e-5
    """Epsilon of RMSNorm (Llama 2's value)."""
    init_std: float = 0.02
    """Std of the normal init of embeddings and linear weights (GPT-2); residual output projections get
    init_std / sqrt(2 * n_layers) (GPT-2, Radford et al. 2019, section 2.3)."""

    def __post_init__(self) -> None:
        require(self.vocab_size is None or self.vocab_size > 0, "vocab_size",
                f"must be positive, got {self.vocab_size}")
        for key in ("d_model", "n_layers", "n_heads"):
            require(getattr(self, key) > 0, key, f"must be positive, got {getattr(self, key)}")
        require(self.d_model % self.n_heads == 0, "n_heads",
                f"{self.n_heads} does not divide d_model={self.d_model}")
        require(self.head_dim % 2 == 0, "n_heads", f"head_dim={self.head_dim} must be even for RoPE")
        kv = self.kv_heads
        require(kv > 0 and self.n_heads % kv == 0, "n_kv_heads",
                f"{self.n_kv_heads} does not divide n_heads={self.n_heads}")
        require(self.ffn_hidden is None or self.ffn_hidden > 0, "ffn_hidden",
                f"must be positive, got {self.ffn_hidden}")
        require(self.norm_eps > 0, "norm_eps", f"must be positive, got {self.norm_eps}")
        require(self.init_std > 0, "init_std", f"must be positive, got {self.init_std}")
        require(self.train_length is None or self.train_length >= 2, "train_length",
                f"must be at least 2 (or None), got {self.train_length}")
        require(not self.tied_init.needs_tied_embeddings or self.tie_embeddings, "tied_init",
                f"{self.tied_init.kind!r} needs tie_embeddings = true")
        # ReRoPE's attention positions keys by cache slot, not by the routed tokens' own positions (mod.py).
        require(not self.mod.routes_tokens or self.rope.clipped_window() is None, "mod.kind",
                f"Mixture of Depths does not combine with rope kind {self.rope.kind!r}")
        self.layout.check(self.n_layers, self.rope, self.mod)
        if self.train_length is not None:  # RoPE lengths left unset mean the training length
            self.rope = self.rope.resolved(self.train_length)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def ffn_hidden_size(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return -(-(8 * self.d_model // 3) // 64) * 64

    def attention_layers(self) -> list[LayerAttention]:
        """How each block attends, bottom first: the layout's answer (the `full` layout asks the RoPE kind)."""
        return self.layout.layers(self.n_layers, self.train_length, self.rope)

    def build(self) -> nn.Module:
        """The model with initialised weights (seed torch's RNG first for a reproducible init)."""
        from isoflop.nn.model import TransformerLM

        if self.vocab_size is None:
            raise ValueError("model.vocab_size is unresolved; build from ExperimentConfig.resolved_model")
        return TransformerLM(self)
