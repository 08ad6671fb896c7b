from __future__ import annotations

import torch

from isoflop.nn.config import ModelConfig
from isoflop.optim.param_groups import decay_groups


def test_norms_get_no_decay_and_tied_weights_appear_once():
    model = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, tie_embeddings=True).build()
    groups = decay_groups(model, 0.1)
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim == 1 for p in no_decay)
    assert len(no_decay) == 2 * 2 + 1  # two norms per block + the final norm
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert sum(p.numel() for p in decay + no_decay) == sum(p.numel() for p in model.parameters())
    torch.optim.AdamW(groups)  # accepted as parameter groups
