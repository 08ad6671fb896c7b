"""Optimizer step time of Lion and Tiger against AdamW on a recipe's model (issue 6: they should not be slower).

Only `optimizer.step()` is timed, on the model's real parameter groups with fixed random gradients; the
optimizers alternate round by round so machine drift hits all equally; the median is reported.

    python benchmarks/optimizer_step.py [--recipe small] [--rounds 7] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from isoflop.optim.config import OptimConfig
from isoflop.recipes import get_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    cfg = get_recipe(args.recipe).resolved_model
    torch.manual_seed(0)
    setups = {}
    for kind in ("adamw", "lion", "tiger"):
        model = cfg.build()
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        optimizer = OptimConfig.from_dict({"kind": kind, "lr": 1e-4}).build(model)
        optimizer.step()  # allocate state outside the timing
        setups[kind] = optimizer
    seconds: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(args.rounds):
        for kind, optimizer in setups.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            seconds[kind].append((time.perf_counter() - start) / args.steps)
    ms = {k: statistics.median(v) * 1e3 for k, v in seconds.items()}
    n_params = sum(p.numel() for p in cfg.build().parameters())
    print(json.dumps({"benchmark": "optimizer_step", "recipe": args.recipe, "params": n_params,
                      "threads": torch.get_num_threads(), **{f"{k}_ms": round(v, 3) for k, v in ms.items()},
                      "lion_over_adamw": round(ms["lion"] / ms["adamw"], 3),
                      "tiger_over_adamw": round(ms["tiger"] / ms["adamw"], 3)}))


if __name__ == "__main__":
    main()
