"""The RoPE kinds that clip relative positions at a window (ReRoPE, Leaky ReRoPE; Su, kexue.fm 9708), which
need their own attention (nn/rerope.py). Pure Python; family in rope.py.
"""

from __future__ import annotations

from isoflop.config import config, require
from isoflop.nn.attention_config import ClippedAttention, LayerAttention
from isoflop.nn.rope import RopeConfig


@config
class ReRope(RopeConfig):
    """ReRoPE (Su, kexue.fm 9708): the relative position m - n is clipped at a window w, so attention uses the
    rotation by min(m - n, w). Plain RoPE frequencies theta^(-2i/d). Prefill attends in two passes (plain RoPE
    inside the window, a fixed rotation w outside); cached decoding keeps keys unrotated (see nn/rerope.py).
    Not exportable to Hugging Face."""

    kind = "rerope"
    window: int = 512
    """w: relative positions from w on are clipped (Su's best: 1/4 to 1/2 of the training length)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.window >= 1, "window", f"must be at least 1, got {self.window}")

    def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
        return [self.theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]

    def slope(self) -> float:
        """Growth of the relative position past the window: 0 for ReRoPE."""
        return 0.0

    def relative_position(self, distance: float) -> float:
        """The position used for a query `distance` = m - n >= 0 tokens after its key."""
        if distance < self.window:
            return distance
        return self.window + (distance - self.window) * self.slope()

    def clipped_window(self) -> tuple[int, float] | None:
        return self.window, self.slope()

    def layer_attention(self) -> LayerAttention:
        return ClippedAttention(self)


@config
class LeakyReRope(ReRope):
    """Leaky ReRoPE (Su, kexue.fm 9708): past the window w the relative position grows with slope 1/k,
    w + (m - n - w) / k; k = 1 is plain RoPE and k -> infinity is ReRoPE."""

    kind = "leaky_rerope"
    k: float = 16.0
    """The slope past the window is 1/k (Su's default 16)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.k >= 1.0, "k", f"must be at least 1, got {self.k}")

    def slope(self) -> float:
        return 1.0 / self.k
