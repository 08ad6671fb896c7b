"""How a tied model avoids starting as a confident bigram model: `model.tied_init` (pure Python).

With tied embeddings the head's logit of token i at a position holding token i is the embedding row's norm
times the normed input's, about d * sigma against N(0, d sigma^2) for every other token, so the initial loss
is about log(e^(d sigma) + (V - 1) e^(d sigma^2 / 2)), well above ln V when sigma^2 ~ 1/d (Su, kexue.fm
9698). Each kind is one remedy (or none); each says what module the head reads through, how it initialises,
what it adds to the parameter count and whether a Hugging Face tied head holds it.

The module between the final norm and the head is always `TransformerLM.head_projection` (an identity for
the kinds that change only the init), so a checkpoint's tensor names do not depend on anything but the kind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from isoflop.config import ConfigError, Variant, config

if TYPE_CHECKING:
    from torch import nn


@config
class TiedInit(Variant, family=True):
    """`model.tied_init`: `normal`, `ln_vocab`, `projection` or `half_swap`."""

    default_kind = "normal"
    #: True when the kind only makes sense with model.tie_embeddings (ModelConfig refuses it otherwise)
    needs_tied_embeddings: ClassVar[bool] = True

    def build(self, d_model: int) -> nn.Module:
        """What the head reads the normed state through (TransformerLM.head_projection)."""
        from torch import nn

        return nn.Identity()

    def init_(self, *, embedding: nn.Embedding, head_projection: nn.Module, vocab_size: int, d_model: int) -> None:
        """Re-initialise after the model's Normal(0, init_std) pass (called last by TransformerLM.init_weights)."""

    def params(self, d_model: int) -> int:
        """Parameters of `build(d_model)`."""
        return 0

    def check_hf(self) -> None:
        """ConfigError unless a Hugging Face tied head (logits = embedding @ normed state) holds this kind."""
        raise ConfigError("", f"{self.kind!r} changes the head's input, which Llama's tied head cannot hold "
                              "(only 'normal' and 'ln_vocab', which are inits)")


@config
class NormalTiedInit(TiedInit):
    """Plain Normal(0, init_std), the same as untied models (the default)."""

    kind = "normal"
    needs_tied_embeddings = False

    def check_hf(self) -> None:
        pass


@config
class LnVocabTiedInit(TiedInit):
    """The shared matrix gets std ln(V) / d_model, so the self-logit d * std is ln V and the initial loss is
    about ln(2V) instead of far above ln V."""

    kind = "ln_vocab"

    def init_(self, *, embedding: nn.Embedding, head_projection: nn.Module, vocab_size: int, d_model: int) -> None:
        from torch import nn

        nn.init.normal_(embedding.weight, 0.0, math.log(vocab_size) / d_model)

    def check_hf(self) -> None:
        pass


@config
class ProjectionTiedInit(TiedInit):
    """An orthogonally initialised D x D linear map (no bias) between the final norm and the tied head: a
    rotation leaves the self-logit at the level of the others at initialisation, and is learnt."""

    kind = "projection"

    def build(self, d_model: int) -> nn.Module:
        from torch import nn

        return nn.Linear(d_model, d_model, bias=False)

    def init_(self, *, embedding: nn.Embedding, head_projection: nn.Module, vocab_size: int, d_model: int) -> None:
        from torch import nn

        nn.init.orthogonal_(head_projection.weight)

    def params(self, d_model: int) -> int:
        return d_model * d_model


@config
class HalfSwapTiedInit(TiedInit):
    """The parameter-free swap of the two halves of the normed vector before the tied head: the input no
    longer lines up with its own embedding row."""

    kind = "half_swap"

    def build(self, d_model: int) -> nn.Module:
        from isoflop.nn.head import HalfSwap

        return HalfSwap()
