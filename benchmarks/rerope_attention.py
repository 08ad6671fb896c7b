"""Cost of two-pass ReRoPE attention (nn/rerope.py) against plain SDPA attention with the same weights.

ReRoPE's prefill computes the T x T scores twice, in float32 matmuls outside SDPA, so it costs more than the
1.5x in FLOPs that counting assigns it. Both modules hold the same q/k/v/o weights and see the same input;
forward and forward + backward are timed, alternating round by round so machine drift hits both equally, and
the median is reported with the ratio rerope / sdpa.

    python benchmarks/rerope_attention.py [--lengths 512,2048] [--d-model 512] [--heads 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from isoflop.nn.attention import Attention
from isoflop.nn.rerope import ReRopeAttention
from isoflop.nn.rope import DefaultRope
from isoflop.nn.rope_clipped import ReRope
from isoflop.nn.rotary import Rotary


def _time_round(fn: Callable[[], None], rounds: list[float], repeat: int) -> None:
    """Append the mean seconds of `repeat` calls of `fn` to `rounds` (one round)."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    rounds.append((time.perf_counter() - start) / repeat)


def _forward(module: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    with torch.no_grad():
        module(x, cos, sin)


def _forward_backward(module: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    module(x.clone().requires_grad_(True), cos, sin).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    D, N = args.d_model, args.heads
    plain = Attention(D, N, N)
    rerope = ReRopeAttention(D, N, N, ReRope(window=128))  # window 1/4 of 512 (Su 9708's best range)
    rerope.load_state_dict(plain.state_dict(), strict=True)  # same q/k/v/o (its Rotary is not persistent)
    rotary = Rotary(DefaultRope(), D // N)
    rows = []
    for T in (int(x) for x in args.lengths.split(",")):
        x = torch.randn(args.batch, T, D)
        cos, sin = rotary(0, T)
        times: dict[str, list[float]] = {f"{k}_{m}": [] for k in ("sdpa", "rerope") for m in ("fwd", "fwdbwd")}
        modules = {"sdpa": plain, "rerope": rerope}

        inputs = (x, cos, sin)
        for module in modules.values():  # warm-up outside the timing
            _forward(module, *inputs)
            _forward_backward(module, *inputs)
        for _ in range(args.rounds):
            for name, module in modules.items():
                _time_round(lambda m=module, a=inputs: _forward(m, *a), times[f"{name}_fwd"], args.repeat)
                _time_round(lambda m=module, a=inputs: _forward_backward(m, *a), times[f"{name}_fwdbwd"], args.repeat)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append({"seq_len": T, **{f"{k}_ms": round(v, 2) for k, v in ms.items()},
                     "fwd_ratio": round(ms["rerope_fwd"] / ms["sdpa_fwd"], 2),
                     "fwdbwd_ratio": round(ms["rerope_fwdbwd"] / ms["sdpa_fwdbwd"], 2)})
    print(json.dumps({"benchmark": "rerope_attention", "d_model": D, "heads": N, "batch": args.batch,
                      "dtype": "float32", "device": "cpu", "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
