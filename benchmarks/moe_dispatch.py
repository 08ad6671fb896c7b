"""Forward + backward throughput of the MoE layer's sorted dispatch against a per-expert loop in the style of
Hugging Face's Mixtral sparse block (one `torch.where` over an expert mask and one `index_add_` per expert).

Both run the same weights in the same process on the same inputs (E = 8, top-2, softmax -> top-k ->
renormalise, dropless); the implementations alternate round by round so machine drift hits both alike,
and the median is reported. The layer runs twice: its default path (`prefer_grouped_mm`: the grouped matmul
or the loop, by rows) and its per-expert loop over sorted slices. When transformers is installed, its own
`MixtralSparseMoeBlock` (eager experts) runs too, with the same weights copied in. CPU runs in float32; CUDA,
when present, in bfloat16. Beside them, the experts' matmuls alone (`matmul_floor_seconds`) give the
`speedup_ceiling`: the most any dispatch using these matmul kernels could gain over the Mixtral-style loop.

    python benchmarks/moe_dispatch.py [--rounds 5] [--device cpu|cuda]

`--sweep` instead times only the layer's two paths (grouped matmul forced on, per-expert loop forced on; same
weights and inputs, alternating round by round, median of `--rounds`) over a grid of tokens x d_model x hidden
(hidden = each `--hidden-mult` times d_model), and prints one JSON line with every point's figures; this is
what `isoflop.nn.moe.prefer_grouped_mm` was chosen from. Each round runs enough steps to last about
`--round-seconds`, so small shapes are not timed on a single step.

    python benchmarks/moe_dispatch.py --sweep [--tokens 256,1024,4096,8192] [--d-model 128,256,512,1024]
        [--hidden-mult 2] [--rounds 5] [--round-seconds 0.2] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from isoflop.nn.ffn_config import MoEFFN
from isoflop.nn.moe import Experts, MoE

#: realistic: a small LM's layer; moe_tiny: the `moe-tiny` recipe's (16 x 256 tokens, D 128, experts 192 wide)
SHAPES = {"realistic": dict(tokens=8192, d_model=512, hidden=1024), "moe_tiny": dict(tokens=4096, d_model=128, hidden=192),
          "small": dict(tokens=512, d_model=128, hidden=256)}


def mixtral_style(moe: MoE, x_ND: torch.Tensor) -> torch.Tensor:
    """The eager per-expert loop of transformers' Mixtral block (v4): router softmax in float32, top-k,
    renormalise, then for each expert hit: where(mask) -> gather -> SwiGLU -> scale -> index_add_."""
    n_experts, top_k = moe.cfg.experts, moe.cfg.top_k
    w = moe.experts
    logits_NE = F.linear(x_ND, moe.gate.weight)
    weights_NK, selected_NK = torch.topk(F.softmax(logits_NE, dim=1, dtype=torch.float), top_k, dim=-1)
    weights_NK = (weights_NK / weights_NK.sum(dim=-1, keepdim=True)).to(x_ND.dtype)
    out_ND = torch.zeros_like(x_ND)
    expert_mask_EKN = F.one_hot(selected_NK, num_classes=n_experts).permute(2, 1, 0)
    for e in torch.greater(expert_mask_EKN.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist():
        slot, token = torch.where(expert_mask_EKN[e])
        x_mD = x_ND[token]
        y_mD = F.linear(F.silu(F.linear(x_mD, w.gate_proj[e])) * F.linear(x_mD, w.up_proj[e]), w.down_proj[e])
        out_ND.index_add_(0, token, y_mD * weights_NK[token, slot, None])
    return out_ND


def transformers_block(moe: MoE):
    """transformers' MixtralSparseMoeBlock holding `moe`'s weights (gate and up fused as it stores them), or
    None when transformers is not installed."""
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
        from transformers.utils import logging
    except ImportError:
        return None
    logging.set_verbosity_error()  # a standalone expert module warns that no experts implementation is set
    w = moe.experts
    cfg = MixtralConfig(hidden_size=w.gate_proj.shape[2], intermediate_size=w.hidden,
                        num_local_experts=moe.cfg.experts, num_experts_per_tok=moe.cfg.top_k)
    block = MixtralSparseMoeBlock(cfg).to(device=w.gate_proj.device, dtype=w.gate_proj.dtype)
    with torch.no_grad():
        block.gate.weight.copy_(moe.gate.weight)
        block.experts.gate_up_proj.copy_(torch.cat([w.gate_proj, w.up_proj], dim=1))
        block.experts.down_proj.copy_(w.down_proj)

    def run(x_ND: torch.Tensor) -> torch.Tensor:
        out = block(x_ND.unsqueeze(0))
        return (out[0] if isinstance(out, tuple) else out).squeeze(0)

    run.module = block  # type: ignore[attr-defined]
    return run


def _step(fn, x_ND: torch.Tensor, grad_ND: torch.Tensor, moe: MoE) -> None:
    moe.zero_grad(set_to_none=True)
    if hasattr(fn, "module"):
        fn.module.zero_grad(set_to_none=True)
    fn(x_ND).backward(grad_ND)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_rounds(impls: dict, x_ND: torch.Tensor, grad_ND: torch.Tensor, moe: MoE, device: torch.device, *,
                  steps: int, rounds: int, alternate: bool) -> dict[str, list[float]]:
    """Seconds per forward + backward step of each implementation, one entry per round of `steps` steps;
    `alternate` reverses the order every other round so that none always goes first."""
    seconds: dict[str, list[float]] = {k: [] for k in impls}
    for r in range(rounds):
        order = list(impls.items())
        if alternate and r % 2:
            order.reverse()
        for k, fn in order:
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                _step(fn, x_ND, grad_ND, moe)
            _sync(device)
            seconds[k].append((time.perf_counter() - start) / steps)
    return seconds


def _layer_and_inputs(tokens: int, d_model: int, hidden: int, device: torch.device, dtype: torch.dtype
                      ) -> tuple[MoE, torch.Tensor, torch.Tensor]:
    """The E = 8, top-2 layer with seeded weights, an input that wants its gradient, and an output gradient."""
    torch.manual_seed(0)
    moe = MoE(MoEFFN(experts=8, top_k=2), d_model, hidden)
    for p in moe.parameters():
        torch.nn.init.normal_(p, 0.0, d_model ** -0.5)
    moe = moe.to(device=device, dtype=dtype)
    x_ND = torch.randn(tokens, d_model, device=device, dtype=dtype, requires_grad=True)
    return moe, x_ND, torch.randn(tokens, d_model, device=device, dtype=dtype)


def matmul_floor_seconds(moe: MoE, x_ND: torch.Tensor, device: torch.device, *, steps: int, rounds: int) -> float:
    """Seconds per step of the experts' matmuls alone, as every dropless dispatch must run them: for each expert
    with m routed rows, forward x @ gate^T, x @ up^T, h @ down^T and the six backward products (input and
    weight gradients), on ready contiguous operands, with no routing, gather, SwiGLU or combine. A dispatch
    cannot run faster than its own matmuls, so Mixtral-style time over this is the largest speedup any
    implementation with these kernels can show at the shape (median of `rounds` rounds)."""
    w = moe.experts
    with torch.no_grad():
        selected_NK = F.linear(x_ND, moe.gate.weight).topk(moe.cfg.top_k, dim=-1).indices
    counts = torch.bincount(selected_NK.reshape(-1), minlength=moe.cfg.experts).tolist()
    operands = []
    for e, m in enumerate(counts):
        d, h = w.gate_proj.shape[2], w.hidden
        x_mD, h_mH, gy_mD, gh_mH = (torch.randn(m, k, device=device, dtype=x_ND.dtype) for k in (d, h, d, h))
        operands.append((x_mD, h_mH, gy_mD, gh_mH, w.gate_proj[e].detach(), w.up_proj[e].detach(),
                         w.down_proj[e].detach()))

    def step() -> None:
        for x_mD, h_mH, gy_mD, gh_mH, gate_HD, up_HD, down_DH in operands:
            x_mD @ gate_HD.t(), x_mD @ up_HD.t(), h_mH @ down_DH.t()  # forward
            gy_mD @ down_DH, gy_mD.t() @ h_mH  # down: input and weight gradients
            gh_mH @ gate_HD, gh_mH.t() @ x_mD, gh_mH @ up_HD, gh_mH.t() @ x_mD  # gate and up

    step()
    seconds = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        seconds.append((time.perf_counter() - start) / steps)
    return statistics.median(seconds)


def measure(shape: dict, device: torch.device, dtype: torch.dtype, rounds: int) -> dict:
    n = shape["tokens"]
    moe, x_ND, grad_ND = _layer_and_inputs(n, shape["d_model"], shape["hidden"], device, dtype)

    def ours(x):
        Experts.use_grouped_mm = None
        return moe(x.unsqueeze(0)).squeeze(0)

    def ours_loop(x):
        Experts.use_grouped_mm = False
        return moe(x.unsqueeze(0)).squeeze(0)

    impls = {"ours": ours, "ours_expert_loop": ours_loop, "mixtral_style": lambda x: mixtral_style(moe, x)}
    hf = transformers_block(moe)
    if hf is not None:
        impls["transformers"] = hf
    with torch.no_grad():
        reference = mixtral_style(moe, x_ND)
        max_diff = max(float((fn(x_ND) - reference).abs().max()) for k, fn in impls.items() if k != "mixtral_style")
    steps = max(1, 8192 // n) * (1 if device.type == "cpu" else 10)
    for fn in impls.values():  # warm-up: allocator, kernels
        _step(fn, x_ND, grad_ND, moe)
    seconds = _timed_rounds(impls, x_ND, grad_ND, moe, device, steps=steps, rounds=rounds, alternate=False)
    Experts.use_grouped_mm = None
    tps = {k: n / statistics.median(v) for k, v in seconds.items()}
    tps["matmuls_only"] = n / matmul_floor_seconds(moe, x_ND, device, steps=steps, rounds=rounds)
    return {**shape, "experts": 8, "top_k": 2, **{f"{k}_tokens_per_s": round(v) for k, v in tps.items()},
            "speedup": round(tps["ours"] / tps["mixtral_style"], 3),
            "speedup_expert_loop": round(tps["ours_expert_loop"] / tps["mixtral_style"], 3),
            "speedup_ceiling": round(tps["matmuls_only"] / tps["mixtral_style"], 3),
            **({"speedup_vs_transformers": round(tps["ours"] / tps["transformers"], 3)} if "transformers" in tps else {}),
            "max_abs_diff": max_diff}


def sweep_point(tokens: int, d_model: int, hidden: int, device: torch.device, dtype: torch.dtype, rounds: int,
                round_seconds: float) -> dict:
    """The layer's grouped path against its per-expert loop at one shape: forward + backward seconds per step
    (median over rounds), grouped / loop speedup (> 1: grouped faster) and the largest output difference."""
    moe, x_ND, grad_ND = _layer_and_inputs(tokens, d_model, hidden, device, dtype)

    def path(grouped: bool):
        def fn(x):
            Experts.use_grouped_mm = grouped
            return moe(x.unsqueeze(0)).squeeze(0)
        return fn

    impls = {"grouped": path(True), "loop": path(False)}
    try:
        with torch.no_grad():
            max_diff = float((impls["grouped"](x_ND) - impls["loop"](x_ND)).abs().max())
        warm: dict[str, float] = {}
        for k, fn in impls.items():  # warm-up, and a first timing to size each round
            _step(fn, x_ND, grad_ND, moe)
            _sync(device)
            start = time.perf_counter()
            _step(fn, x_ND, grad_ND, moe)
            _sync(device)
            warm[k] = time.perf_counter() - start
        steps = max(1, math.ceil(round_seconds / max(min(warm.values()), 1e-6)))
        seconds = _timed_rounds(impls, x_ND, grad_ND, moe, device, steps=steps, rounds=rounds, alternate=True)
    finally:
        Experts.use_grouped_mm = None
    grouped_s, loop_s = statistics.median(seconds["grouped"]), statistics.median(seconds["loop"])
    spread = {k: round((max(v) - min(v)) / statistics.median(v), 3) for k, v in seconds.items()}
    return {"tokens": tokens, "d_model": d_model, "hidden": hidden, "steps_per_round": steps,
            "grouped_ms": round(grouped_s * 1e3, 3), "loop_ms": round(loop_s * 1e3, 3),
            "speedup_grouped_over_loop": round(loop_s / grouped_s, 3),
            "relative_spread_grouped": spread["grouped"], "relative_spread_loop": spread["loop"],
            "max_abs_diff": max_diff}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", action="store_true", help="grouped vs loop over a grid of shapes")
    parser.add_argument("--tokens", type=_ints, default=[256, 1024, 4096, 8192])
    parser.add_argument("--d-model", type=_ints, default=[128, 256, 512, 1024])
    parser.add_argument("--hidden-mult", type=_ints, default=[2])
    parser.add_argument("--round-seconds", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.sweep:
        points = [sweep_point(n, d, m * d, device, dtype, args.rounds, args.round_seconds)
                  for n, d, m in itertools.product(args.tokens, args.d_model, args.hidden_mult)]
        print(json.dumps({"benchmark": "moe_dispatch_sweep", "device": str(device),
                          "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "experts": 8, "top_k": 2, "rounds": args.rounds,
                          "points": points}))
        return
    results = {name: measure(shape, device, dtype, args.rounds) for name, shape in SHAPES.items()}
    print(json.dumps({"benchmark": "moe_dispatch", "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                      "threads": torch.get_num_threads(), "torch": torch.__version__, **results}))


if __name__ == "__main__":
    main()
