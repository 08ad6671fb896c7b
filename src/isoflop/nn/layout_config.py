"""Attention layouts: which layers attend to the whole prefix and which to a window, and how each layer uses
positions. Pure Python (no torch); `nn/layout_attention.py` holds the torch module.

`model.layout.kind`:
    full   every layer is full causal attention with the model's RoPE (the default; today's behaviour).
    hwfa   Hybrid Window-Full Attention (Su, kexue.fm 9603): the bottom layers attend to a window of w tokens
           with RoPE; the top `full_layers` attend to everything with no position embedding at all (NoPE) and
           log-n query scaling max(1, log_N n), N the training length.
    hwfa2  Su, kexue.fm 9731: the full layers keep RoPE and sit mid-stack (one: layer L//2; two: L//3 and
           2L//3), window layers elsewhere; at evaluation `rerope_window` switches the full layers to ReRoPE
           with the same weights.

Window convention: a window of w means query i sees keys j with 0 <= i - j < w (itself and w - 1 before it),
so a token at the top of `n` stacked window layers sees (w - 1) * n + 1 positions back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isoflop.config import ConfigError, Variant, config, require
from isoflop.nn.attention_config import ClippedAttention, LayerAttention, WindowAttention

if TYPE_CHECKING:
    from isoflop.nn.mod_config import MoDConfig
    from isoflop.nn.rope import RopeConfig


@config
class AttentionLayout(Variant, family=True):
    """The attention of each layer: `model.layout.kind` picks the variant."""

    default_kind = "full"

    def layers(self, n_layers: int, train_length: int | None, rope: RopeConfig) -> list[LayerAttention]:
        """One LayerAttention per block, bottom first. `train_length` is N (ModelConfig.train_length), `rope`
        the model's RoPE."""
        raise NotImplementedError

    def check(self, n_layers: int, rope: RopeConfig, mod: MoDConfig) -> None:
        """Cross-checks against the rest of the model; raises ConfigError with a key relative to the model."""

    def check_hf(self) -> None:
        """ConfigError (key relative to this config) unless Llama's attention computes this layout."""
        raise ConfigError("kind", f"Llama attends to the whole prefix with RoPE in every layer; layout "
                                  f"{self.kind!r} (window / NoPE layers) cannot be held")


@config
class FullLayout(AttentionLayout):
    """Every layer attends to the whole causal prefix with the model's RoPE (whose kind picks the attention)."""

    kind = "full"

    def layers(self, n_layers: int, train_length: int | None, rope: RopeConfig) -> list[LayerAttention]:
        return [rope.layer_attention()] * n_layers

    def check_hf(self) -> None:
        pass


@config
class _HybridLayout(AttentionLayout):
    """Shared knobs of the hybrid window-full layouts (not a kind itself)."""

    window: int | None = None
    """w of the window layers. None: the largest w with (w - 1) * (window layers) + 1 <= alpha * N (Su 9603's
    rule, N = model.train_length), so the top of the window stack sees at most alpha * N positions."""
    alpha: float = 0.75
    """The receptive-field fraction of the window rule (Su 9603: alpha <= 3/4)."""
    full_layers: int = 1
    """How many layers attend to the whole prefix (Su found two worse than one for hwfa)."""

    def __post_init__(self) -> None:
        require(self.window is None or self.window >= 1, "window", f"must be at least 1 (or None), got {self.window}")
        require(0 < self.alpha <= 1, "alpha", f"must be in (0, 1], got {self.alpha}")
        require(self.full_layers >= 1, "full_layers", f"must be at least 1, got {self.full_layers}")

    def check(self, n_layers: int, rope: RopeConfig, mod: MoDConfig) -> None:
        require(self.full_layers < n_layers, "layout.full_layers",
                f"{self.full_layers} leaves no window layer in n_layers={n_layers}")
        require(rope.clipped_window() is None, "rope.kind",
                f"{rope.kind!r} does not combine with layout {self.kind!r} (hwfa2 has rerope_window)")
        require(not mod.routes_tokens, "layout.kind",
                f"{self.kind!r} windows assume every token in every layer; not with mod.kind={mod.kind!r}")

    def full_layer_indices(self, n_layers: int) -> list[int]:
        raise NotImplementedError

    def window_size(self, n_layers: int, train_length: int | None) -> int:
        """w: as given, or the largest w with (w - 1) * n_window + 1 <= alpha * N."""
        if self.window is not None:
            return self.window
        if train_length is None:
            raise ConfigError("train_length", f"layout {self.kind!r} with window=None needs the training length N "
                                              "(resolved from data.seq_len by ExperimentConfig.resolved_model)")
        n_window = n_layers - self.full_layers
        return max(1, int((self.alpha * train_length - 1) // n_window) + 1)


@config
class HwfaLayout(_HybridLayout):
    """Su 9603: window layers with RoPE below, the top `full_layers` full attention with NoPE and log-n."""

    kind = "hwfa"
    log_n: bool = True
    """Scale the full layers' queries by max(1, log_N n) (Su found dropping it hurt); False for the ablation."""

    def check(self, n_layers: int, rope: RopeConfig, mod: MoDConfig) -> None:
        super().check(n_layers, rope, mod)
        require(rope.log_n_length is None, "rope.log_n_length",
                "hwfa applies log-n scaling to its full layers itself; leave rope.log_n_length unset")

    def full_layer_indices(self, n_layers: int) -> list[int]:
        return list(range(n_layers - self.full_layers, n_layers))

    def layers(self, n_layers: int, train_length: int | None, rope: RopeConfig) -> list[LayerAttention]:
        if self.log_n and train_length is None:
            raise ConfigError("train_length", "layout 'hwfa' scales its full layers by log-n of the training "
                                              "length N; set model.train_length (or build through ExperimentConfig)")
        window = self.window_size(n_layers, train_length)
        full = set(self.full_layer_indices(n_layers))
        top = WindowAttention(window=None, rotate=False, log_n_length=train_length if self.log_n else None)
        return [top if i in full else WindowAttention(window=window) for i in range(n_layers)]


@config
class Hwfa2Layout(_HybridLayout):
    """Su 9731: full layers with RoPE mid-stack (layer (i + 1) * L // (f + 1) for i < f), windows elsewhere;
    `rerope_window` turns the full layers into ReRoPE at evaluation (same weights)."""

    kind = "hwfa2"
    rerope_window: int | None = None
    """None: the full layers use plain RoPE (training). W: they use ReRoPE with window W (evaluation,
    `--set model.layout.rerope_window=W`); needs a rope kind with a ReRoPE form (`default`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rerope_window is None or self.rerope_window >= 1, "rerope_window",
                f"must be at least 1 (or None), got {self.rerope_window}")

    def check(self, n_layers: int, rope: RopeConfig, mod: MoDConfig) -> None:
        super().check(n_layers, rope, mod)
        require(self.rerope_window is None or rope.clipped(self.rerope_window) is not None, "rope.kind",
                f"layout.rerope_window switches the full layers to ReRoPE, which rope kind {rope.kind!r} has "
                "no form of")

    def full_layer_indices(self, n_layers: int) -> list[int]:
        return [(i + 1) * n_layers // (self.full_layers + 1) for i in range(self.full_layers)]

    def layers(self, n_layers: int, train_length: int | None, rope: RopeConfig) -> list[LayerAttention]:
        window = self.window_size(n_layers, train_length)
        full = set(self.full_layer_indices(n_layers))
        clipped = None if self.rerope_window is None else rope.clipped(self.rerope_window)
        # same q/k/v/o parameters either way, so the trained checkpoint loads into the ReRoPE evaluation model
        mid = WindowAttention(window=None) if clipped is None else ClippedAttention(clipped)
        return [mid if i in full else WindowAttention(window=window) for i in range(n_layers)]
