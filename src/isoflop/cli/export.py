"""`isoflop export RUN --format hf --out DIR`: a checkpoint transformers can load."""

from __future__ import annotations

import argparse
from pathlib import Path

from isoflop.cli.common import require_run_dir
from isoflop.config import ConfigError


def add_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("--format", choices=["hf"], default="hf", help="hf: config.json + model.safetensors")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--step", type=int, default=None, help="export this checkpoint (default: the newest)")


def export(args: argparse.Namespace) -> int:
    from isoflop.interop.hf_moe import export_hf, hf_architecture
    from isoflop.rundir.atomic import check_empty_or_absent
    from isoflop.train.artifacts import load_config, load_model

    run = require_run_dir(args.run)
    out = Path(args.out)
    check_empty_or_absent(out)
    cfg = load_config(run)
    try:
        hf_architecture(cfg.resolved_model)  # refuse what no class holds before reading any weights
    except ValueError as e:
        raise ConfigError(str(run), str(e)) from None
    model = load_model(run, step=args.step)
    try:
        # Llama for dense FFNs, Mixtral or Qwen2-MoE for MoE ones (interop/hf_moe.py)
        arch = export_hf(cfg.resolved_model, model.state_dict(), out, max_position_embeddings=cfg.data.seq_len)
    except ValueError as e:
        raise ConfigError(str(run), str(e)) from None
    print(f"exported {run} to {out} ({arch})")
    return 0
