"""Validation loss and bits per byte.

bits/byte = (sum of per-token losses in nats) / ln 2 / (bytes those target tokens stand for), with each token's
exact byte length from the tokenizer (end-of-text tokens stand for 0 bytes; their loss still counts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], token_bytes_V: torch.Tensor,
             *, device: torch.device, precision: str) -> dict[str, float]:
    """Mean loss per token and bits per byte over `batches` of (inputs, targets)."""
    was_training = model.training
    model.eval()
    loss_sum, n_tokens, n_bytes = 0.0, 0, 0
    token_bytes_V = token_bytes_V.to(device)
    for inputs_BT, targets_BT in batches:
        inputs_BT, targets_BT = inputs_BT.to(device), targets_BT.to(device)
        with autocast(device, precision):
            logits_BTV = model(inputs_BT)
        losses = F.cross_entropy(logits_BTV.float().flatten(0, 1), targets_BT.flatten(), reduction="sum")
        loss_sum += float(losses)
        n_tokens += targets_BT.numel()
        n_bytes += int(token_bytes_V[targets_BT].sum())
    model.train(was_training)
    if n_tokens == 0:
        raise ValueError("validation produced no batches")
    return {
        "val_loss": loss_sum / n_tokens,
        "val_bpb": loss_sum / math.log(2) / max(n_bytes, 1),
        "val_tokens": n_tokens,
        "val_bytes": n_bytes,
    }
