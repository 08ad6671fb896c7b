"""Training step time of Mixture of Depths against the dense model of the same shape, next to the FLOP ratio
that counting predicts (the paper's claim: MoD steps faster in proportion to the FLOPs it skips).

One step is forward + backward + AdamW on a fixed random batch, CPU fp32 unless --device says otherwise; the
two models alternate round by round so machine drift hits both alike; the median step is reported, and the
fastest, which a busy machine disturbs least. The prediction counts matmul and attention FLOPs only (nn/counting.py); the optimizer, norms, the loss's softmax,
top-k and gather/scatter are outside it, and they weigh relatively more in the MoD step.

    python benchmarks/mod_step.py [--d-model 512] [--layers 8] [--seq-len 512] [--batch 8] [--capacity 0.125]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import flops_per_token
from isoflop.nn.mod_config import TopKMoD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--capacity", type=float, default=0.125)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    shape = dict(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                 tie_embeddings=True)
    configs = {"dense": ModelConfig(**shape),
               "mod": ModelConfig(**shape, mod=TopKMoD(capacity=args.capacity, every=args.every))}
    torch.manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), device=args.device)
    steps = {name: _stepper(cfg, tokens, args.device) for name, cfg in configs.items()}
    for step in steps.values():
        step()  # allocate optimizer state and warm the allocator outside the timing
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    ms = {name: statistics.median(v) * 1e3 for name, v in seconds.items()}
    best = {name: min(v) * 1e3 for name, v in seconds.items()}  # the least disturbed step, for a busy machine
    flops = {name: flops_per_token(cfg, args.seq_len).training for name, cfg in configs.items()}
    predicted, measured = flops["mod"] / flops["dense"], ms["mod"] / ms["dense"]
    print(json.dumps({
        "benchmark": "mod_step", "device": args.device, "threads": torch.get_num_threads(),
        "d_model": args.d_model, "layers": args.layers, "seq_len": args.seq_len, "batch": args.batch,
        "capacity": args.capacity, "every": args.every,
        "dense_ms": round(ms["dense"], 1), "mod_ms": round(ms["mod"], 1),
        "dense_training_flops_per_token": flops["dense"], "mod_training_flops_per_token": flops["mod"],
        "predicted_ratio": round(predicted, 4), "measured_ratio": round(measured, 4),
        "measured_over_predicted": round(measured / predicted, 3),
        "dense_best_ms": round(best["dense"], 1), "mod_best_ms": round(best["mod"], 1),
        "measured_ratio_best": round(best["mod"] / best["dense"], 4),
    }))


def _stepper(cfg: ModelConfig, tokens_BT: torch.Tensor, device: str):
    model = cfg.build().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs_BT, targets_BT = tokens_BT[:, :-1], tokens_BT[:, 1:]

    def step() -> None:
        logits_BTV = model(inputs_BT)
        loss = F.cross_entropy(logits_BTV.flatten(0, 1), targets_BT.flatten())
        aux = model.aux_loss()
        (loss + aux if aux is not None else loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()

    return step


if __name__ == "__main__":
    main()
