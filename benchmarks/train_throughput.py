"""Training tokens/s of isoflop's model against a minimal plain-PyTorch Llama of identical shape.

Both train with the same AdamW, batch and precision in the same process; measurements alternate between the two
(A B A B ...) so drift in the machine's speed hits both equally, and the median of the rounds is reported.
Prints one JSON line per (recipe, precision): tokens/s of each and the ratio isoflop / plain (target >= 1.0).

    python benchmarks/train_throughput.py [--recipes tiny,small] [--precisions fp32,bf16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.nn.counting import flops_per_token
from isoflop.recipes import get_recipe


class PlainLlama(nn.Module):
    """The reference: the textbook Llama block, written as plainly as possible (nanoGPT style)."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, kv_heads: int, hidden: int, theta: float,
                 tied: bool):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "n1": nn.RMSNorm(d, eps=1e-5), "q": nn.Linear(d, d, bias=False),
            "k": nn.Linear(d, kv_heads * self.hd, bias=False), "v": nn.Linear(d, kv_heads * self.hd, bias=False),
            "o": nn.Linear(d, d, bias=False), "n2": nn.RMSNorm(d, eps=1e-5),
            "g": nn.Linear(d, hidden, bias=False), "u": nn.Linear(d, hidden, bias=False),
            "dn": nn.Linear(hidden, d, bias=False)}) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.wte.weight
        self.inv_freq = theta ** (-torch.arange(0, self.hd, 2).float() / self.hd)

    def rope(self, x, cos, sin):
        h = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin

    def forward(self, idx):
        B, T = idx.shape
        f = torch.outer(torch.arange(T, dtype=torch.float32), self.inv_freq)
        cos, sin = torch.cat((f, f), -1).cos(), torch.cat((f, f), -1).sin()
        x = self.wte(idx)
        for b in self.blocks:
            h = b["n1"](x)
            q = self.rope(b["q"](h).view(B, T, self.heads, self.hd).transpose(1, 2), cos, sin)
            k = self.rope(b["k"](h).view(B, T, self.kv_heads, self.hd).transpose(1, 2), cos, sin)
            v = b["v"](h).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.heads)
            x = x + b["o"](y.transpose(1, 2).reshape(B, T, -1))
            h = b["n2"](x)
            x = x + b["dn"](F.silu(b["g"](h)) * b["u"](h))
        return self.head(self.norm(x))


def copy_weights(ours: nn.Module, plain: PlainLlama) -> None:
    names = {"attention_norm": "n1", "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v",
             "attention.o_proj": "o", "ffn_norm": "n2", "ffn.gate_proj": "g", "ffn.up_proj": "u",
             "ffn.down_proj": "dn"}
    with torch.no_grad():
        plain.wte.weight.copy_(ours.embed.weight)
        plain.norm.weight.copy_(ours.norm.weight)
        plain.head.weight.copy_(ours.lm_head.weight)
        for block, layer in zip(plain.blocks, ours.layers, strict=True):
            for src, dst in names.items():
                block[dst].weight.copy_(layer.get_submodule(src).weight)
    batch = torch.randint(0, plain.wte.num_embeddings, (2, 16))
    assert torch.allclose(plain(batch), ours(batch), atol=1e-4), "the reference must compute the same function"


def timed_steps(model: nn.Module, optimizer, batch: torch.Tensor, precision: str, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(recipe: str, precision: str, rounds: int, steps: int) -> dict:
    cfg = get_recipe(recipe)
    m = cfg.resolved_model
    torch.manual_seed(0)
    ours = m.build()
    plain = PlainLlama(m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.kv_heads, m.ffn_hidden_size,
                       m.rope.theta, m.tie_embeddings)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in plain.parameters())
    copy_weights(ours, plain)  # same numbers, same work: torch's default Linear init runs into denormals
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    batch = torch.randint(0, m.vocab_size, (micro, cfg.data.seq_len + 1))
    opts = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in
            (("isoflop", ours), ("plain", plain))}
    models = {"isoflop": ours, "plain": plain}
    for name in models:  # warm up allocator and kernels
        timed_steps(models[name], opts[name], batch, precision, 2)
    seconds: dict[str, list[float]] = {"isoflop": [], "plain": []}
    for _ in range(rounds):
        for name in models:
            seconds[name].append(timed_steps(models[name], opts[name], batch, precision, steps))
    tokens = micro * cfg.data.seq_len * steps
    tps = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    per_token = flops_per_token(m, cfg.data.seq_len).training
    return {"benchmark": "train_throughput", "recipe": recipe, "precision": precision, "device": "cpu",
            "threads": torch.get_num_threads(), "batch": [micro, cfg.data.seq_len],
            "isoflop_tokens_per_s": round(tps["isoflop"]), "plain_tokens_per_s": round(tps["plain"]),
            "ratio": round(tps["isoflop"] / tps["plain"], 3),
            "isoflop_gflops_per_s": round(tps["isoflop"] * per_token / 1e9, 1), "rounds": rounds,
            "steps_per_round": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="tiny,small")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timed round")
    args = parser.parse_args()
    for recipe in args.recipes.split(","):
        for precision in args.precisions.split(","):
            print(json.dumps(measure(recipe, precision, args.rounds, args.steps)), flush=True)


if __name__ == "__main__":
    main()
