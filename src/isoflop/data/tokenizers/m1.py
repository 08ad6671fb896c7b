"""M1, the byte-level language model that drives the neural arithmetic coders (`ac`, `equalinfo-ac`).

M1 is a `TransformerLM` trained on the byte tokenizer (ids 0..255, end-of-text 256), as in Lester et al. 2024
§3.2. Its next-symbol distribution is read over 257 symbols: the 256 bytes and end-of-text, which the coders use
as their END symbol (M1 learnt where documents end from the shards, so END needs no invented probability).
A context starts with end-of-text as beginning-of-sequence, as M1 saw after each document in training.

**Determinism.** Encoder and decoder must turn M1's output into bit-identical CDFs. Both run exactly one code
path, `M1Stepper`: a KV-cached forward of one token per row, float32, CPU, eval mode, no autograd, over a batch
of exactly `rows` rows and a cache of exactly `capacity` positions, all rows at the same position. So every
call has the same shapes and the same ops in the same order on both sides, whatever documents are in the batch
and however many are live (idle rows are fed byte 0). What a row gets then depends only on its own tokens:
every op is row-wise (embedding, RMSNorm, SwiGLU, attention within the row) or a GEMM whose sum over the
inner dimension never mixes rows, and the kernel and its blocking are chosen by the shape, which is fixed.
M1 runs on one intra-op thread (set while it runs, restored after), so no kernel can split a sum by threads
and the path does not depend on the process's thread setting; one thread is also the fast choice for such small
GEMMs on a shared CPU (measured 0.9 ms a step against 27 ms with 2 threads under load).
The tests hold this (a document alone and in a batch, at another row, gives the same tokens). The floats are
then turned into CDFs by `arithmetic.cdf_from_logits`, which is row-wise and platform-free. What is *not*
guaranteed: the same bits on another CPU family or torch build (other kernels); tokens should be decoded
where they were encoded, as with any float-driven neural coder. `torch.use_deterministic_algorithms` is not
switched on: every op here is already deterministic on CPU, and its NaN-filling of new tensors cost 15x.

Legend: R = rows of the batch, V = M1's vocabulary rows (257 used), S = 257 coder symbols.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isoflop.config import ConfigError
from isoflop.nn.attention import KVCache
from isoflop.nn.config import ModelConfig
from isoflop.nn.model import TransformerLM

BOS = 256  # the byte tokenizer's end-of-text id, which opens every M1 context
N_SYMBOLS = 257  # 256 bytes + END (M1's end-of-text logit)
WEIGHTS_FILE = "m1_model.safetensors"
CONFIG_FILE = "m1_config.json"


def check_byte_model(cfg: ModelConfig, where: str) -> None:
    """A ConfigError unless `cfg` is a resolved model with rows for the 257 byte-tokenizer ids."""
    if cfg.vocab_size is None or cfg.vocab_size < N_SYMBOLS:
        raise ConfigError(where, f"M1 must be a byte-level model (vocab >= {N_SYMBOLS}), got vocab {cfg.vocab_size}")


class M1:
    """M1's weights and config; saved as safetensors + JSON so a tokenizer folder is self-contained."""

    def __init__(self, model: TransformerLM):
        check_byte_model(model.cfg, "m1")
        self.model = model.float().cpu().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def train_length(self) -> int:
        return int(self.model.cfg.train_length or 256)

    def files(self) -> dict[str, bytes]:
        from safetensors.torch import save

        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        if self.model.cfg.tie_embeddings:
            state.pop("lm_head.weight", None)  # shared with embed.weight; safetensors refuses aliases
        return {WEIGHTS_FILE: save(state),
                CONFIG_FILE: (json.dumps(self.model.cfg.to_dict(), sort_keys=True) + "\n").encode()}

    @classmethod
    def from_files(cls, directory: Path) -> M1:
        from safetensors.torch import load

        try:
            cfg = ModelConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
            state = load((directory / WEIGHTS_FILE).read_bytes())
        except FileNotFoundError as e:
            raise ConfigError(str(directory), f"missing M1 file {Path(e.filename).name}") from None
        except (OSError, ValueError, ConfigError) as e:
            raise ConfigError(str(directory), f"bad M1 files: {e}") from None
        model = cfg.build()
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]:
            raise ConfigError(str(directory / WEIGHTS_FILE), f"weights do not fit the M1 config "
                              f"(missing {missing}, unexpected {unexpected})")
        return cls(model)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """One intra-op thread and no autograd while M1 runs (module docstring); the thread count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)


class M1Stepper:
    """The one path from tokens to logits (see the module docstring): `start()` opens a fresh context in
    every row (feeds BOS), `step(tokens_R)` feeds one token per row; both return float32 logits (R, 257)."""

    def __init__(self, m1: M1, *, rows: int, capacity: int):
        self.model, self.rows, self.capacity = m1.model, rows, capacity
        self.cache: KVCache | None = None
        self._bos_logits: np.ndarray | None = None

    @property
    def position(self) -> int:
        """Tokens fed since `start()`."""
        return self.cache.length if self.cache is not None else 0

    def start(self) -> np.ndarray:
        """BOS in every row. Only the first call runs M1: BOS's keys and values stay at position 0 of the cache
        (later tokens are written after it, and attention reads only the filled prefix), and a forward of the
        same input in the same shapes gives the same bits, so a restart is `length = 1` and the saved logits.
        EqualInfoAC restarts every window: this saves one forward in a handful."""
        if self.cache is None or self._bos_logits is None:
            self.cache = self.model.new_cache(self.rows, self.capacity)
            self._bos_logits = self._forward(np.full(self.rows, BOS, dtype=np.int64))
        else:
            self.cache.length = 1
        return self._bos_logits.copy()

    def step(self, tokens_R: np.ndarray) -> np.ndarray:
        assert self.cache is not None, "start() first"
        return self._forward(np.asarray(tokens_R, dtype=np.int64))

    def _forward(self, tokens_R: np.ndarray) -> np.ndarray:
        tokens_R1 = torch.from_numpy(tokens_R.reshape(self.rows, 1).copy())
        logits_R1V = self.model(tokens_R1, self.cache)
        return logits_R1V[:, 0, :N_SYMBOLS].float().numpy().copy()


def describe(m1: M1) -> dict[str, Any]:
    """M1's shape, for a tokenizer's meta."""
    cfg = m1.model.cfg
    return {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "train_length": m1.train_length,
            "params": int(sum(p.numel() for p in m1.model.parameters()))}


__all__ = ["BOS", "M1", "M1Stepper", "N_SYMBOLS", "check_byte_model", "deterministic", "describe"]
