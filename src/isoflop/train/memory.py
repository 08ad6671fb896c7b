"""Will the run's model and optimizer state fit? Checked before anything is allocated, so an absurd size is bad
input (exit 2, one line) rather than a process the kernel kills minutes later.

The estimate is a lower bound: fp32 weights (4 bytes per parameter), their gradients (4) and the optimizer's
state (AdamW: two moments, 8; Lion and Tiger: one, 4), on one device (DDP replicates all of it on every rank;
FSDP2's sharding is ignored, so under FSDP the check errs on the safe side). Activations come on top.
"""

from __future__ import annotations

import os

import torch

from isoflop.config import ConfigError

STATE_BYTES = {"adamw": 8, "lion": 4, "tiger": 4}
"""Optimizer state per parameter, fp32 (AdamW: exp_avg + exp_avg_sq; Lion/Tiger: one momentum)."""


def needed_bytes(n_params: int, optimizer: str) -> int:
    return n_params * (4 + 4 + STATE_BYTES.get(optimizer, 8))


def available_bytes(device: torch.device) -> int | None:
    """Free memory of `device` (CUDA: the driver's free bytes; CPU: MemAvailable), None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_fits(n_params: int, optimizer: str, device: torch.device) -> None:
    """ConfigError naming model when weights, gradients and optimizer state alone exceed the free memory."""
    need, free = needed_bytes(n_params, optimizer), available_bytes(device)
    if free is not None and need > free:
        raise ConfigError("model", f"{n_params:,} parameters need at least {need / 2**30:.1f} GiB for weights, "
                                   f"gradients and {optimizer} state; {device.type} has {free / 2**30:.1f} GiB free")
