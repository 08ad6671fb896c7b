"""`isoflop eval` and `isoflop sample`: read a finished (or checkpointed) run directory."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from isoflop.cli.common import print_json, require_run_dir
from isoflop.config import ConfigError


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batches", type=int, default=None, help="validation batches (default: the run's eval.batches)")
    parser.add_argument("--step", type=int, default=None, help="evaluate this checkpoint (default: the newest)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", default=None, metavar="L1,L2,...",
                        help="evaluate at these sequence lengths (a list of results; each batch holds about as "
                             "many tokens as at the training length)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the run's config for evaluation, e.g. --set model.rope.kind=yarn "
                             "--set model.rope.factor=8 (repeatable)")
    parser.add_argument("--causal-routing", action="store_true",
                        help="route as sampling does (MoD's predictor or router BCE) instead of training's top-k")


def parse_seq_lens(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError("--seq-len", f"expected comma-separated integers, got {text!r}") from None
    if not lengths or any(n < 1 for n in lengths):
        raise ConfigError("--seq-len", f"expected positive lengths, got {text!r}")
    return lengths


def eval_run(args: argparse.Namespace) -> int:
    import torch

    from isoflop.data.shards import prepare_shards
    from isoflop.rundir import RunDir, step_of
    from isoflop.train.artifacts import load_config, load_model
    from isoflop.train.evaluate import EvalSet, evaluate_run

    run = RunDir(args.run).require_run()
    cfg = load_config(run.path, args.overrides)
    seq_lens = parse_seq_lens(args.seq_len) if args.seq_len is not None else None
    step = step_of(run.checkpoint(args.step))
    model = load_model(run.path, device=args.device, step=step, overrides=args.overrides)
    if args.causal_routing and not model.has_causal_rule():
        raise ConfigError("--causal-routing", model.non_causal_reason()
                          or f"{run.path}'s model has no routing to make causal (no MoD)")
    n_batches = args.batches or cfg.eval.batches
    if n_batches < 1:
        raise ConfigError("--batches", f"must be positive, got {n_batches}")
    eval_set = EvalSet.of(prepare_shards(cfg.data), cfg.resolved_model.vocab_size)
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    if seq_lens is not None:
        return _eval_lengths(args, run.path, step, cfg, model, eval_set, seq_lens, micro, n_batches)
    result = evaluate_run(model, eval_set, seq_len=cfg.data.seq_len, batch_size=micro, batches=n_batches,
                          device=torch.device(args.device), causal=args.causal_routing)
    result = {"run": str(run.path), "step": step, **({"routing": "causal"} if args.causal_routing else {}), **result}
    if args.json:
        print_json(result)
    else:
        print(f"{run.path} step {step}{' (causal routing)' if args.causal_routing else ''}: val loss "
              f"{result['val_loss']:.4f}, {result['val_bpb']:.4f} bits/byte over {result['val_tokens']:,} tokens")
    return 0


def add_sample_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 picks the most likely token")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every token")
    parser.add_argument("--device", default="cpu")


def sample(args: argparse.Namespace) -> int:
    import torch

    from isoflop.nn.generate import generate
    from isoflop.train.artifacts import load_model, load_tokenizer

    run = require_run_dir(args.run)
    if args.max_new_tokens < 0:
        raise ConfigError("--max-new-tokens", f"must be non-negative, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError("--temperature", f"must be non-negative, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError("--top-k", f"must be positive, got {args.top_k}")
    model = load_model(run, device=args.device)
    reason = model.non_causal_reason()  # routing that looks at later tokens (MoD top-k, expert choice, ...)
    if reason:
        raise ConfigError("", reason)
    model.use_causal_routing(True)
    tokenizer = load_tokenizer(run)
    prompt = tokenizer.encode(args.prompt.encode("utf-8"))
    if len(prompt) == 0:
        prompt = [tokenizer.eot_id]  # an empty prompt starts a new document
    prompt_BT = torch.as_tensor(prompt, dtype=torch.long, device=args.device).view(1, -1)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    out_BT = generate(model, prompt_BT, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                      generator=generator, use_cache=not args.no_cache, vocab_limit=tokenizer.vocab_size)
    # For reading: bytes that are not UTF-8 (a byte-level model can emit them) show as U+FFFD.
    text = tokenizer.decode(out_BT[0].tolist()).decode("utf-8", errors="replace")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


def _eval_lengths(args: argparse.Namespace, run: Any, step: int, cfg: Any, model: Any, eval_set: Any,
                  seq_lens: list[int], micro: int, n_batches: int) -> int:
    """One evaluation per sequence length; a batch at length L holds max(1, micro * T_train // L) sequences, so
    every length scores about as many tokens and, since batches are the split's first windows, the same text."""
    import torch

    from isoflop.train.evaluate import batch_size_at, evaluate_run

    results = []
    for length in seq_lens:
        batch = batch_size_at(length, micro_batch=micro, train_seq_len=cfg.data.seq_len)
        try:
            r = evaluate_run(model, eval_set, seq_len=length, batch_size=batch, batches=n_batches,
                             device=torch.device(args.device))
        except ConfigError as e:
            raise ConfigError("--seq-len", e.problem) from None
        results.append({"seq_len": length, "val_loss": r["val_loss"], "val_bpb": r["val_bpb"],
                        "val_tokens": r["val_tokens"]})
    if args.json:
        print_json(results)
    else:
        rope = cfg.model.rope.kind
        print(f"{run} step {step} (rope {rope}, trained at {cfg.data.seq_len}):")
        for r in results:
            print(f"  seq_len {r['seq_len']:>6}: val loss {r['val_loss']:.4f}, {r['val_bpb']:.4f} bits/byte "
                  f"over {r['val_tokens']:,} tokens")
    return 0
