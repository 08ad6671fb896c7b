"""How one layer attends: a small pure-Python spec per kind of attention, which builds its torch module and
tells counting what its T x T work costs.

The model asks its layout for one spec per block (nn/layout_config.py); the `full` layout asks the RoPE kind
(`RopeConfig.layer_attention()`), so a RoPE kind that needs its own attention (ReRoPE) says so itself.

Cost convention (nn/counting.py): plain attention computes one T x T score matrix (Q K^T) and one weighted
sum (A V), 2 * T * n_heads * head_dim FLOPs each per token. A spec with `score_passes = p` computes p score
matrices and one weighted sum, (p + 1) / 2 times plain attention's T x T work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from isoflop.nn.rope import RopeConfig


class LayerAttention:
    """The attention of one block. Every kind has the same q/k/v/o parameters (a checkpoint loads across
    them); they differ in which keys a query sees and how positions enter."""

    #: T x T score matrices the layer computes per forward (see the module docstring)
    score_passes: ClassVar[int] = 1

    def build(self, d_model: int, n_heads: int, kv_heads: int) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class FullAttention(LayerAttention):
    """The whole causal prefix with the model's RoPE and log-n scaling, through SDPA's causal kernel."""

    def build(self, d_model: int, n_heads: int, kv_heads: int) -> nn.Module:
        from isoflop.nn.attention import Attention

        return Attention(d_model, n_heads, kv_heads)


@dataclass(frozen=True)
class WindowAttention(LayerAttention):
    """A layer of a hybrid layout: a causal window, RoPE or none, and its own log-n scaling."""

    window: int | None
    """Keys with i - j < window are visible; None: the whole causal prefix."""
    rotate: bool = True
    """Rotate queries and keys by the model's RoPE; False: no position embedding (NoPE)."""
    log_n_length: int | None = None
    """The layer's own log-n query scaling max(1, ln(p + 1) / ln N) with N this; None: the model's (if any)."""

    def build(self, d_model: int, n_heads: int, kv_heads: int) -> nn.Module:
        from isoflop.nn.layout_attention import LayoutAttention

        return LayoutAttention(d_model, n_heads, kv_heads, window=self.window, rotate=self.rotate,
                               log_n_length=self.log_n_length)


@dataclass(frozen=True)
class ClippedAttention(LayerAttention):
    """ReRoPE-style attention (Su, kexue.fm 9708): relative positions clipped at a window, which SDPA cannot
    compute; prefill takes two score passes (nn/rerope.py)."""

    rope: RopeConfig
    """A RoPE kind whose `clipped_window()` is not None."""
    score_passes: ClassVar[int] = 2

    def build(self, d_model: int, n_heads: int, kv_heads: int) -> nn.Module:
        from isoflop.nn.rerope import ReRopeAttention

        return ReRopeAttention(d_model, n_heads, kv_heads, self.rope)
