"""Validation loss and bits per byte.

bits/byte = (sum of per-token losses in nats) / ln 2 / (bytes those target tokens stand for), with each token's
exact byte length from the tokenizer (end-of-text tokens stand for 0 bytes; their loss still counts), or, for
compressed-text tokenizers, the split's bytes per content token (`artifacts.token_bytes`, tokenizers/base.py).
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
        n_bytes += token_bytes_V[targets_BT].sum().item()  # float where tokens are byte shares (base.py)
    model.train(was_training)
    if n_tokens == 0:
        raise ValueError("validation produced no batches")
    return {
        "val_loss": loss_sum / n_tokens,
        "val_bpb": loss_sum / math.log(2) / max(n_bytes, 1),
        "val_tokens": n_tokens,
        "val_bytes": n_bytes,
    }


def evaluate_at_length(model: nn.Module, tokens, length: int, token_bytes_V: torch.Tensor, *, train_seq_len: int,
                       micro_batch: int, n_batches: int, device: torch.device) -> dict[str, float]:
    """Validation loss and bits per byte at sequence length `length` (e.g. past the training length): a batch
    holds max(1, micro_batch * train_seq_len // length) sequences, so every length scores about as many tokens
    and, since `val_batches` takes the split's first windows in order, about the same text. fp32."""
    from isoflop.config import ConfigError
    from isoflop.data.loader import n_windows, val_batches

    if n_windows(len(tokens), length) < 1:
        raise ConfigError("--seq-len", f"the validation split ({len(tokens):,} tokens) is too short for {length}")
    batch = max(1, micro_batch * train_seq_len // length)
    r = evaluate(model, val_batches(tokens, length, batch, n_batches), token_bytes_V, device=device, precision="fp32")
    return {"seq_len": length, "val_loss": r["val_loss"], "val_bpb": r["val_bpb"], "val_tokens": r["val_tokens"]}
