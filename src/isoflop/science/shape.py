"""A model shape (d_model, n_layers, n_heads) for a target parameter count, counted by the engine's own rules.

The count is `isoflop.nn.counting.param_groups(ModelConfig(...)).total`: N is the **total** parameter count
(embedding and output head included, Hoffmann et al. 2022's N), the N of the planner's N_opt. The rest of the
model is the engine's default Llama-style block (SwiGLU hidden 8/3·d_model rounded up to 64, RMSNorm, RoPE).

Rule
    head_dim     64 below d_model = 2048, 128 from there (GPT-3 and small Llama-style models use 64; Llama 1-3
                 at 7B and above use 128); d_model = n_heads · head_dim, so d_model steps by head_dim.
    aspect       the target d_model/n_layers grows log-linearly with N: 32 at 1e6, 64 at 1e8, 128 at 1e10 and
                 above (clamped to [32, 128]); GPT-3 (Brown et al. 2020, Table 2.1) goes from 64 at 125M to 128
                 from 6.7B, Llama 2 7B-70B sit at 102-128. Kaplan et al. 2020 (Fig. 5) find loss changes by a
                 few percent at most across aspect ratios 20-200 at fixed N, so the rule is a sensible default,
                 not an optimum.
    choice       every (d_model, n_layers) whose total is within `tolerance` (5 %) of the target is a candidate;
                 the one minimising |ln(aspect/target)| + 20·|relative error| wins (1 % of error is worth a 20 %
                 miss of the aspect ratio), so shapes land close to both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import param_groups
from isoflop.science.errors import ScienceError

DEFAULT_VOCAB = 32_000
"""Llama 1/2's vocabulary (Touvron et al. 2023)."""
ERROR_WEIGHT = 20.0
MAX_PARAMS = 2e12
"""The largest target the search takes: above every published dense model (PaLM's 540B, Llama 3.1's 405B); the
search walks d_model in head-size steps, about 17 s at 1e12 on CPU-2, so a far larger target would hang."""


def target_aspect(n_params: float) -> float:
    """d_model/n_layers aimed at for a model of `n_params` total parameters (see the module docstring)."""
    return min(128.0, max(32.0, 64.0 * 2.0 ** (math.log10(n_params / 1e8) / 2.0)))


def default_head_dim(d_model: int) -> int:
    return 128 if d_model >= 2048 else 64


@dataclass(frozen=True)
class Shape:
    config: ModelConfig
    target: float
    params: dict[str, int]

    @property
    def total(self) -> int:
        return self.params["total"]

    @property
    def rel_error(self) -> float:
        return self.total / self.target - 1.0

    @property
    def aspect(self) -> float:
        return self.config.d_model / self.config.n_layers

    def overrides(self) -> list[str]:
        """`--set` overrides that give this shape to a recipe."""
        c = self.config
        out = [f"model.vocab_size={c.vocab_size}", f"model.d_model={c.d_model}", f"model.n_layers={c.n_layers}",
               f"model.n_heads={c.n_heads}", f"model.n_kv_heads={c.kv_heads}",
               f"model.ffn_hidden={c.ffn_hidden_size}"]
        return out + (["model.tie_embeddings=true"] if c.tie_embeddings else [])

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {"target_params": self.target, "d_model": c.d_model, "n_layers": c.n_layers,
                "n_heads": c.n_heads, "n_kv_heads": c.kv_heads, "head_dim": c.head_dim,
                "ffn_hidden": c.ffn_hidden_size, "vocab_size": c.vocab_size, "tie_embeddings": c.tie_embeddings,
                "aspect_ratio": self.aspect, "target_aspect_ratio": target_aspect(self.target),
                "params": self.params, "rel_error": self.rel_error, "overrides": self.overrides()}


def _config(d_model: int, n_layers: int, head_dim: int, vocab_size: int, tie: bool, kv_ratio: int) -> ModelConfig:
    n_heads = d_model // head_dim
    return ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                       n_kv_heads=max(1, n_heads // kv_ratio), tie_embeddings=tie)


def model_shape(n_params: float, *, vocab_size: int = DEFAULT_VOCAB, tie_embeddings: bool = False,
                head_dim: int | None = None, aspect: float | None = None, kv_ratio: int = 1,
                tolerance: float = 0.05) -> Shape:
    """The shape whose total parameter count is within `tolerance` of `n_params` (see the module docstring).

    kv_ratio: query heads per key/value head (1 = multi-head attention; 8 = Llama 2 70B's GQA); rounded so that
    n_kv_heads divides n_heads. Raises ScienceError when no shape fits (e.g. the embedding alone is too big).
    """
    if not (math.isfinite(n_params) and n_params > 0):
        raise ScienceError(f"must be a positive finite number, got {n_params}", key="n_params")
    if n_params > MAX_PARAMS:
        raise ScienceError(f"{n_params:.3g} parameters is beyond the shape search's {MAX_PARAMS:.0e}", key="n_params")
    if vocab_size < 1 or kv_ratio < 1 or not 0 < tolerance < 1:
        raise ScienceError("vocab_size and kv_ratio must be >= 1 and tolerance in (0, 1)")
    goal = aspect if aspect is not None else target_aspect(n_params)
    best: tuple[float, ModelConfig, dict[str, int]] | None = None
    d_model = 0
    while True:
        d_model += head_dim or 64
        hd = head_dim or default_head_dim(d_model)
        if d_model % hd:
            continue
        ratio = _kv_ratio(d_model // hd, kv_ratio)
        one = param_groups(_config(d_model, 1, hd, vocab_size, tie_embeddings, ratio)).total
        if one > n_params * (1 + tolerance):
            break  # wider models only grow
        per_layer = param_groups(_config(d_model, 2, hd, vocab_size, tie_embeddings, ratio)).total - one
        guess = 1 + (n_params - one) / per_layer
        for n_layers in {max(1, math.floor(guess)), max(1, math.ceil(guess))}:
            params = param_groups(_config(d_model, n_layers, hd, vocab_size, tie_embeddings, ratio)).to_dict()
            error = params["total"] / n_params - 1.0
            if abs(error) > tolerance:
                continue
            score = abs(math.log(d_model / n_layers / goal)) + ERROR_WEIGHT * abs(error)
            if best is None or score < best[0]:
                best = (score, _config(d_model, n_layers, hd, vocab_size, tie_embeddings, ratio), params)
    if best is None:
        smallest = param_groups(_config(head_dim or 64, 1, head_dim or 64, vocab_size, tie_embeddings, 1)).total
        raise ScienceError(f"no shape within {tolerance:.0%} of {n_params:.4g} total parameters with "
                           f"vocab_size={vocab_size} (the smallest model has {smallest:,}; use a smaller vocabulary "
                           f"or tied embeddings)", key="n_params")
    return Shape(config=best[1], target=float(n_params), params=best[2])


def _kv_ratio(n_heads: int, wanted: int) -> int:
    """The largest ratio <= wanted that divides n_heads (so n_kv_heads = n_heads / ratio is an integer)."""
    return max(r for r in range(1, min(wanted, n_heads) + 1) if n_heads % r == 0)
