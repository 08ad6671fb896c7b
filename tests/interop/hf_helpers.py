"""What the Hugging Face interop tests share: tiny seeded models, tokens, and loading a checkpoint with
transformers while collecting every warning it logs or raises."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from isoflop.nn.config import ModelConfig

VOCAB, SEQ = 97, 17


def tiny_model(seed: int = 0, **overrides):
    """A tiny seeded model whose norm weights are moved away from 1, so the norms are tested too."""
    cfg = ModelConfig(**{"vocab_size": VOCAB, "d_model": 64, "n_layers": 2, "n_heads": 4, **overrides})
    torch.manual_seed(seed)
    model = cfg.build().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return cfg, model


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(seed))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_hf(model_class, path: Path, *, ignore: tuple[str, ...] = ()):
    """`model_class.from_pretrained(path)` in eval mode, its loading info, and every warning transformers logged
    or raised while loading (but those whose text is in `ignore`). The handler sits on the "transformers"
    logger itself, which does not propagate to the root logger."""
    handler, logger = _Collect(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = model_class.from_pretrained(path, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    messages = handler.messages + [str(w.message) for w in caught if str(w.message) not in ignore]
    return model.eval(), info, messages


def hf_logits(model, tokens_BT: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tokens_BT).logits


def our_logits(model, tokens_BT: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens_BT)
