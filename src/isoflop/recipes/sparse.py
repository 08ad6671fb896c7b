"""Conditional-compute recipes derived from `tiny` by small changes: MoE, Mixture of Depths, and MoDE.

Each trains in about a minute on 2 CPU cores, like `tiny` (LOG.md has the measured times).
"""

from __future__ import annotations

from dataclasses import replace

from isoflop.nn.ffn_config import MoEFFN
from isoflop.nn.mod_config import TopKMoD
from isoflop.recipes.baseline import tiny
from isoflop.train.spec import ExperimentConfig


def moe_tiny() -> ExperimentConfig:
    """`tiny` with a top-2 MoE of 8 experts (Mixtral's router) in every other block; each expert is half the
    dense width, so a token's active FFN FLOPs in a sparse block equal the dense block's."""
    cfg = tiny()
    ffn = MoEFFN(experts=8, top_k=2, every=2, expert_hidden=cfg.model.ffn_hidden_size // 2)
    return replace(cfg, model=replace(cfg.model, ffn=ffn))


def mod_tiny() -> ExperimentConfig:
    """`tiny` with Mixture of Depths: every other block routed at 12.5 % capacity (Raposo et al. 2024),
    with the stop-gradient predictor that lets the model sample causally."""
    cfg = tiny()
    return replace(cfg, model=replace(cfg.model, mod=TopKMoD(capacity=0.125, every=2)))


def mode_tiny() -> ExperimentConfig:
    """Staged MoDE: `mod-tiny`'s routing around `moe-tiny`'s blocks (tokens may skip attention and experts)."""
    cfg = moe_tiny()
    return replace(cfg, model=replace(cfg.model, mod=TopKMoD(capacity=0.125, every=2)))
