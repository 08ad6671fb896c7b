"""The model's configuration: shape, the slots of each block, and the initialisation.

Pure Python (no torch): counting and planning read it without building a model; `build()` imports torch.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Literal

from isoflop.config import Config, Variant, config, require
from isoflop.nn.layout_config import AttentionLayout, FullLayout
from isoflop.nn.mod_config import MoDConfig, NoMoD
from isoflop.nn.rope import DefaultRope, RopeConfig

if TYPE_CHECKING:
    from torch import nn


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


@config
class DenseFFN(FFNConfig):
    """SwiGLU MLP (Shazeer 2020, arXiv 2002.05202): down(silu(gate(x)) * up(x)). No knobs of its own;
    the hidden width is `model.ffn_hidden`."""

    kind = "dense"

    def build(self, d_model: int, hidden: int, layer: int = 0) -> nn.Module:
        from isoflop.nn.mlp import SwiGLU

        return SwiGLU(d_model, hidden)


@config
class ModelConfig(Config):
    """A decoder-only, pre-norm, Llama-style transformer."""

    vocab_size: int | None = None
    """Rows of the embedding and output head. None: the tokenizer's vocabulary rounded up to a multiple of 64
    (resolved by ExperimentConfig.model_config; a model is only built from a resolved config)."""
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
    """The feed-forward slot of every block: `dense`, or `moe` (nn/moe_config.py)."""
    mod: MoDConfig = field(default_factory=NoMoD)
    """Mixture of Depths: `none`, or `topk` routing of every other block (nn/mod_config.py)."""
    rope: RopeConfig = field(default_factory=DefaultRope)
    """Rotary position embedding variant."""
    layout: AttentionLayout = field(default_factory=FullLayout)
    """Which layers attend to a window and which to everything: `full` (every layer), `hwfa`, `hwfa2`
    (nn/layout_config.py)."""
    train_length: int | None = None
    """The sequence length the model was trained at (N of HWFA's window rule and log-n). None: resolved by
    ExperimentConfig.model_config from data.seq_len, like vocab_size."""
    tie_embeddings: bool = False
    """Share the token embedding with the output head (Press & Wolf 2017)."""
    tied_init: Literal["normal", "ln_vocab", "projection", "half_swap"] = "normal"
    """With tie_embeddings, how the tied model avoids starting as a confident bigram model (Su, kexue.fm 9698):
    `normal` plain Normal(0, init_std); `ln_vocab` the shared matrix gets std ln(V) / d_model, so the initial
    loss is about ln V; `projection` an orthogonally initialised D x D linear (no bias) between the final norm
    and the tied head; `half_swap` the parameter-free swap of the two halves of the normalised vector before
    the tied head. Anything but `normal` needs tie_embeddings."""
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
        require(self.tied_init == "normal" or self.tie_embeddings, "tied_init",
                f"{self.tied_init!r} needs tie_embeddings = true")
        # ReRoPE's attention positions keys by cache slot, not by the routed tokens' own positions (mod.py).
        require(self.mod.kind == "none" or self.rope.clipped_window() is None, "mod.kind",
                f"Mixture of Depths does not combine with rope kind {self.rope.kind!r}")
        self._check_layout()

    def _check_layout(self) -> None:
        if self.layout.kind == "full":
            return
        self.layout.check(self.n_layers)
        require(self.rope.clipped_window() is None, "rope.kind",
                f"{self.rope.kind!r} does not combine with layout {self.layout.kind!r} (hwfa2 has rerope_window)")
        require(self.mod.kind == "none", "layout.kind",
                f"{self.layout.kind!r} windows assume every token in every layer; not with mod.kind={self.mod.kind!r}")
        require(self.layout.kind != "hwfa" or self.rope.log_n_length is None, "rope.log_n_length",
                "hwfa applies log-n scaling to its full layers itself; leave rope.log_n_length unset")
        require(getattr(self.layout, "rerope_window", None) is None or self.rope.kind == "default", "rope.kind",
                f"layout.rerope_window needs rope.kind = 'default', got {self.rope.kind!r}")

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

    def build(self) -> nn.Module:
        """The model with initialised weights (seed torch's RNG first for a reproducible init)."""
        from isoflop.nn.model import TransformerLM

        if self.vocab_size is None:
            raise ValueError("model.vocab_size is unresolved; build from ExperimentConfig.model_config")
        return TransformerLM(self)


# Registers the `moe` FFN kind (it subclasses FFNConfig, so it is imported after it).
from isoflop.nn import moe_config as _moe_config  # noqa: E402, F401
