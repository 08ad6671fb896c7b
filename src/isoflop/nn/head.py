"""The parameter-free module the `half_swap` tied head reads through (nn/head_config.py)."""

from __future__ import annotations

import torch
from torch import nn


class HalfSwap(nn.Module):
    """(x[:D/2], x[D/2:]) -> (x[D/2:], x[:D/2]) on the last dimension."""

    def forward(self, h_BTD: torch.Tensor) -> torch.Tensor:
        return torch.cat(h_BTD.chunk(2, dim=-1)[::-1], dim=-1)
