"""Optimizers as a variant family: `optim.kind` picks one; each holds only its own knobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from isoflop.config import Variant, config, require

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from isoflop.optim.lion import SignOptimizer


@config
class OptimConfig(Variant, family=True):
    """The optimizer. `lr` is the peak learning rate; the schedule scales it every step."""

    default_kind = "adamw"
    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.1
    """Decoupled weight decay for matrices (norms and biases get none; see param_groups.py)."""

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be non-negative, got {self.weight_decay}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError


@config
class AdamWConfig(OptimConfig):
    """torch.optim.AdamW (Loshchilov & Hutter 2019)."""

    kind = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    """Moment decay rates (beta2 = 0.95 as in GPT-3 and Llama for stability at small batch)."""
    eps: float = 1e-8
    """Denominator epsilon."""
    fused: bool | None = None
    """torch's fused kernel; None lets torch choose (foreach on CPU)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(all(0 <= b < 1 for b in self.betas), "betas", f"each must be in [0, 1), got {self.betas}")
        require(self.eps > 0, "eps", f"must be positive, got {self.eps}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        import torch

        from isoflop.optim.param_groups import decay_groups

        return torch.optim.AdamW(decay_groups(model, self.weight_decay), lr=self.lr, betas=self.betas,
                                 eps=self.eps, fused=self.fused)


@config
class SignOptimConfig(OptimConfig):
    """Knobs shared by the sign optimizers (Lion, Tiger): the embedding-anomaly remedies (see optim/mixed.py).

    Under a sign optimizer a rare token's embedding row keeps moving by full sign steps after the token was
    last seen and drifts to ±1/weight_decay (Su, kexue.fm 9736). A tied output head gives the embedding dense
    gradients, which removes the cause; `embeddings` offers the two remedies for an untied input embedding.
    """

    embeddings: Literal["sign", "lazy", "adamw"] = "sign"
    """Input-embedding rule: "sign" (like any matrix), "lazy" (update only the rows of tokens in the batch:
    absent rows keep weights and momentum), or "adamw" (AdamW for the embedding, the sign rule elsewhere)."""
    embedding_lr_scale: float = 1.0
    """With embeddings = "adamw": AdamW's lr as a multiple of the scheduled lr (AdamW wants 3-10x Lion's)."""
    embedding_weight_decay: float | None = None
    """With embeddings = "adamw": AdamW's decoupled weight decay for the embedding (None = `weight_decay`)."""
    embedding_betas: tuple[float, float] = (0.9, 0.95)
    """With embeddings = "adamw": AdamW's (beta1, beta2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.embedding_lr_scale > 0, "embedding_lr_scale",
                f"must be positive, got {self.embedding_lr_scale}")
        require(self.embedding_weight_decay is None or self.embedding_weight_decay >= 0,
                "embedding_weight_decay", f"must be non-negative, got {self.embedding_weight_decay}")
        require(all(0 <= b < 1 for b in self.embedding_betas), "embedding_betas",
                f"each must be in [0, 1), got {self.embedding_betas}")

    def _with_embeddings(self, groups: list[dict], make: Callable[[list[dict]], SignOptimizer]
                         ) -> torch.optim.Optimizer:
        """`make(groups)`, with the embedding group marked lazy or handed to AdamW as `embeddings` says."""
        from isoflop.optim.mixed import with_adamw_embeddings

        if self.embeddings == "lazy":
            return make([{**g, "lazy": g.get("role") == "embedding"} for g in groups])
        if self.embeddings == "adamw":
            return with_adamw_embeddings(groups, make, lr=self.lr, weight_decay=self.embedding_weight_decay,
                                         lr_scale=self.embedding_lr_scale, betas=self.embedding_betas, eps=1e-8)
        return make(groups)


@config
class LionConfig(SignOptimConfig):
    """Lion (Chen et al. 2023): sign of an interpolated momentum, decoupled decay. See optim/lion.py.

    Lion wants an lr 3-10x smaller and a weight decay 3-10x larger than AdamW's; set them explicitly.
    """

    kind = "lion"
    betas: tuple[float, float] = (0.9, 0.99)
    """(beta1, beta2): beta1 interpolates the update direction, beta2 is the momentum decay (LMs: (0.95, 0.98))."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(all(0 <= b <= 1 for b in self.betas), "betas", f"each must be in [0, 1], got {self.betas}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        from isoflop.optim.lion import Lion
        from isoflop.optim.mixed import split_embeddings
        from isoflop.optim.param_groups import decay_groups

        groups = decay_groups(model, self.weight_decay)
        if self.embeddings != "sign":
            groups = split_embeddings(groups, model)
        return self._with_embeddings(groups, lambda gs: Lion(gs, lr=self.lr, betas=self.betas,
                                                             weight_decay=self.weight_decay))


@config
class TigerConfig(SignOptimConfig):
    """Tiger (Su 2023): Lion with one beta, RMS-relative lr, half lr for norms and biases. See optim/tiger.py."""

    kind = "tiger"
    lr: float = 1e-3
    """Peak relative learning rate alpha: matrices step by alpha * RMS(theta). 1e-3 is the default of
    github.com/bojone/tiger's tiger.py (its README's example: 1.76e-3); Su (kexue.fm/archives/9512) puts the
    peak at 1e-3 to 2e-3."""
    weight_decay: float = 0.01
    """Decoupled weight decay for matrices and embeddings (norm gains and biases get none)."""
    beta: float = 0.965
    """Momentum decay: 0.965, tiger.py's default, recommended by Su (kexue.fm/archives/9512) for language
    (0.945 for vision)."""
    rms_scaling: bool = True
    """Scale the lr by the tensor's RMS (per row for embeddings); False makes Tiger Lion with beta1 = beta2."""
    rms_floor: float = 0.0
    """Lower bound on that RMS so zero-initialised tensors can move (not in Su's Tiger; 0 = off)."""
    grad_accum_steps: int = 1
    """Micro-steps (optimizer.step() calls) per parameter update, accumulated in the momentum itself."""
    nan_guard: bool = True
    """On a NaN/inf gradient, keep the momentum and shrink the weights towards their centre instead."""
    shrink: float = 0.99
    """The NaN guard's shrink factor s: theta <- (theta - c) * s + c, c = 1 for norm gains, else 0."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.beta < 1, "beta", f"must be in [0, 1), got {self.beta}")
        require(self.rms_floor >= 0, "rms_floor", f"must be non-negative, got {self.rms_floor}")
        require(self.grad_accum_steps >= 1, "grad_accum_steps", f"must be >= 1, got {self.grad_accum_steps}")
        require(0 < self.shrink <= 1, "shrink", f"must be in (0, 1], got {self.shrink}")
        require(self.embeddings == "sign" or self.grad_accum_steps == 1, "embeddings",
                f"{self.embeddings!r} embeddings need grad_accum_steps = 1")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        from isoflop.optim.tiger import Tiger, tiger_groups

        return self._with_embeddings(tiger_groups(model, self.weight_decay), lambda gs: Tiger(
            gs, lr=self.lr, beta=self.beta, weight_decay=self.weight_decay, rms_scaling=self.rms_scaling,
            rms_floor=self.rms_floor, grad_accum_steps=self.grad_accum_steps, nan_guard=self.nan_guard,
            shrink=self.shrink))
