"""Which parameters get weight decay: matrices (linear weights, embeddings) do; norms and biases do not.

Decaying gains and biases pulls them towards 0 for no benefit (Loshchilov & Hutter 2019 decay the weights
that multiply activations); this is nanoGPT's and OLMo's rule: decay exactly the parameters with ndim >= 2.
"""

from __future__ import annotations

from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer parameter groups, each named, with shared parameters (tied embeddings) listed once."""
    decay, no_decay, seen = [], [], set()
    for _, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
