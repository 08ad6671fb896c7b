"""Validation loss and bits per byte: the one evaluation that training, `isoflop eval` and the studies share.

bits/byte = (sum of per-token losses in nats) / ln 2 / (bytes those target tokens stand for), with each token's
exact byte length from the tokenizer (end-of-text tokens stand for 0 bytes; their loss still counts), or, for
compressed-text tokenizers, the split's bytes per content token (`token_bytes`, data/tokenizers/base.py).

Batches are the validation split's first windows in order (data/loader.py `val_batches`), so every evaluation
of a run scores the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from isoflop.config import ConfigError
from isoflop.data.loader import n_windows, val_batches
from isoflop.nn.contract import TrainableLM


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def token_bytes(tokenizer: Any, vocab_size: int, byte_share: float | None = None) -> torch.Tensor:
    """Bytes each model vocabulary row stands for (0 for padding rows past the tokenizer's vocabulary).
    Tokenizers without exact byte lengths (compressed text, see tokenizers/base.py) give float64 rows: each
    content token stands for `byte_share` bytes, the split's n_bytes / content tokens (PreparedData.byte_share)."""
    exact = getattr(tokenizer, "exact_byte_lengths", True)
    if not exact and byte_share is None:
        raise ValueError(f"a {tokenizer.kind} tokenizer's tokens are not whole bytes: token_bytes needs byte_share")
    out = torch.zeros(vocab_size, dtype=torch.long if exact else torch.float64)
    lengths = torch.as_tensor(tokenizer.token_byte_lengths(), dtype=out.dtype)
    out[: lengths.numel()] = lengths if exact else lengths * byte_share
    return out


@dataclass(frozen=True)
class EvalSet:
    """A validation split as an evaluation reads it: its tokens and the bytes each vocabulary row stands for."""

    tokens: np.ndarray
    token_bytes_V: torch.Tensor

    @classmethod
    def of(cls, data: Any, vocab_size: int) -> EvalSet:
        """The validation split of prepared shards (`PreparedData`), for a model with `vocab_size` rows."""
        return cls(data.tokens("val"), token_bytes(data.tokenizer, vocab_size, data.byte_share("val")))

    def windows(self, seq_len: int) -> int:
        return n_windows(len(self.tokens), seq_len)


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


def evaluate_run(model: nn.Module, eval_set: EvalSet, *, seq_len: int, batch_size: int, batches: int | None,
                 device: torch.device, precision: str = "fp32", causal: bool = False) -> dict[str, float]:
    """`evaluate` on the first `batches` batches of `batch_size` windows of `seq_len` tokens (None: every full
    window of the split). `causal` routes as sampling does (MoD's predictor; `TrainableLM.use_causal_routing`)
    instead of training's top-k, and switches back after. ConfigError(seq_len) when no window fits."""
    windows = eval_set.windows(seq_len)
    if windows < 1:
        raise ConfigError("seq_len", f"the validation split ({len(eval_set.tokens):,} tokens) is too short for {seq_len}")
    n_batches = -(-windows // batch_size) if batches is None else batches
    batches_iter = val_batches(eval_set.tokens, seq_len, batch_size, n_batches)
    if not causal:
        return evaluate(model, batches_iter, eval_set.token_bytes_V, device=device, precision=precision)
    routed = cast(TrainableLM, model)
    routed.use_causal_routing(True)
    try:
        return evaluate(model, batches_iter, eval_set.token_bytes_V, device=device, precision=precision)
    finally:
        routed.use_causal_routing(False)


def batch_size_at(seq_len: int, *, micro_batch: int, train_seq_len: int) -> int:
    """Sequences per evaluation batch at `seq_len` so that a batch holds about as many tokens as a training
    micro-batch: max(1, micro_batch * train_seq_len // seq_len). Every length then scores about the same text."""
    return max(1, micro_batch * train_seq_len // seq_len)
