"""Sampling from a TransformerLM, with or without a KV cache (both give the same tokens)."""

from __future__ import annotations

import torch

from isoflop.nn.model import TransformerLM


@torch.no_grad()
def generate(model: TransformerLM, prompt_BT: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True, stop_token: int | None = None, vocab_limit: int | None = None) -> torch.Tensor:
    """Continue each prompt by up to `max_new_tokens` tokens; returns (B, T + new). temperature 0 is greedy.
    `vocab_limit` excludes ids from it on (the padding rows past the tokenizer's vocabulary).

    Without a cache every step recomputes the whole sequence: slow, but the reference the cache must match.
    """
    tokens_BT = prompt_BT
    cache = model.new_cache(prompt_BT.shape[0], prompt_BT.shape[1] + max_new_tokens) if use_cache else None
    logits_BTV = model(tokens_BT, cache)
    for _ in range(max_new_tokens):
        logits_BV = logits_BTV[:, -1, :vocab_limit].float()
        next_B1 = _pick(logits_BV, temperature, top_k, generator)
        tokens_BT = torch.cat((tokens_BT, next_B1), dim=1)
        if stop_token is not None and bool((next_B1 == stop_token).all()):
            break
        logits_BTV = model(next_B1, cache) if cache is not None else model(tokens_BT)
    return tokens_BT


def _pick(logits_BV: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits_BV.argmax(dim=-1, keepdim=True)
    logits_BV = logits_BV / temperature
    if top_k is not None and top_k < logits_BV.shape[-1]:
        kth = torch.topk(logits_BV, top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    probs_BV = torch.softmax(logits_BV, dim=-1)
    return torch.multinomial(probs_BV, 1, generator=generator)
