"""Applies rotary embeddings: cos/sin tables from a RopeConfig, rotate-half layout (Hugging Face's)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from isoflop.nn.rope import RopeConfig


class Rotary(nn.Module):
    """Holds inv_freq and returns (cos, sin) for a range of positions, computed in float32."""

    def __init__(self, rope: RopeConfig, head_dim: int):
        super().__init__()
        self.rope, self.head_dim = rope, head_dim
        self.attention_factor = rope.attention_factor()
        # Kinds whose frequencies depend on the sequence length (dynamic NTK) recompute them past this length.
        self.rescale_beyond = rope.rescale_beyond()
        self.log_n_length = rope.log_n_length
        inv_freq = torch.tensor(rope.inv_freq(head_dim), dtype=torch.float32)
        # Not persistent: derived from the config, so it is never stale in a checkpoint.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def reset_frequencies(self) -> None:
        """Recompute `inv_freq` from the config (after a model built on the meta device is materialised)."""
        self.inv_freq.copy_(torch.tensor(self.rope.inv_freq(self.head_dim)))

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (length, head_dim) for positions start .. start + length - 1."""
        inv_freq = self.inv_freq
        if self.rescale_beyond is not None and start + length > self.rescale_beyond:
            # As Hugging Face's dynamic_rope_update: frequencies for the current length, max position + 1.
            inv_freq = torch.tensor(self.rope.inv_freq(self.head_dim, start + length), dtype=torch.float32,
                                    device=inv_freq.device)
        positions = torch.arange(start, start + length, device=inv_freq.device, dtype=torch.float32)
        return self._tables(positions, inv_freq)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (len(positions), head_dim) for any (float) positions, at the config's frequencies:
        ReRoPE rotates by clipped relative positions."""
        return self._tables(positions.to(self.inv_freq.device, torch.float32), self.inv_freq)

    def query_scale(self, start: int, length: int) -> torch.Tensor | None:
        """Log-n factors (length, 1) of the queries at positions start .. start + length - 1, max(1,
        ln(p + 1) / ln L); None when the config's `log_n_length` is None, so plain attention pays nothing."""
        if self.log_n_length is None:
            return None
        positions = torch.arange(start + 1, start + length + 1, device=self.inv_freq.device, dtype=torch.float32)
        return (positions.log() / math.log(self.log_n_length)).clamp_min(1.0).unsqueeze(-1)

    def _tables(self, positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs_TH = torch.outer(positions, inv_freq)  # H = head_dim / 2
        angles_TD = torch.cat((freqs_TH, freqs_TH), dim=-1)
        return angles_TD.cos() * self.attention_factor, angles_TD.sin() * self.attention_factor


def apply_rotary(x_BNTD: torch.Tensor, cos_TD: torch.Tensor, sin_TD: torch.Tensor) -> torch.Tensor:
    """Rotate each (x[i], x[i + D/2]) pair by its angle; computed in float32, returned in x's dtype."""
    x = x_BNTD.float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos_TD + rotated * sin_TD).to(x_BNTD.dtype)
