"""One training run, end to end, in its run directory (the contract in DESIGN.md):

    config.json, plan.json   written first, before any compute
    tokenizer/               the tokenizer the shards were made with
    metrics.jsonl            one record per logged step ("kind": "train") and per evaluation ("kind": "eval")
    checkpoints/step_N/      atomic step checkpoints
    run.json                 written last: the run record, and the mark that the run is complete
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import torch

from isoflop.config import ConfigError
from isoflop.data.corpus import corpus_fingerprint
from isoflop.data.loader import TrainLoader, val_batches
from isoflop.data.shards import PreparedData, prepare
from isoflop.nn.counting import param_groups
from isoflop.train import checkpoint, parallel
from isoflop.train.artifacts import token_bytes
from isoflop.train.evaluate import evaluate
from isoflop.train.hooks import ConsoleProgress, MetricsFile, TensorBoard
from isoflop.train.loop import LoopCallbacks, NonFiniteLoss, train_loop
from isoflop.train.plan import RunPlan, describe, resolve_plan
from isoflop.train.spec import ExperimentConfig


def check_run_dir(out: Path, cfg: ExperimentConfig, *, resume: bool) -> None:
    """Refuse (ConfigError) an output directory that holds another run, or a resume with nothing to resume."""
    config_file = out / "config.json"
    if resume:
        if not config_file.is_file():
            raise ConfigError(str(out), "--resume: no run here (no config.json)")
        # read back through the current schema, so a form older files hold (a variant written as its kind alone,
        # a retired key) is no difference
        saved = ExperimentConfig.from_dict(json.loads(config_file.read_text())).to_dict()
        if saved != cfg.to_dict():
            differing = first_difference(saved, cfg.to_dict())
            raise ConfigError(str(out), f"--resume: the run here has a different config (at {differing})")
        return  # a run killed before its first checkpoint restarts from step 0
    if config_file.is_file():
        raise ConfigError(str(out), "already holds a run; pass --resume to continue it, or choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(str(out), "exists and is not an empty directory")


def run_training(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
                 stream: TextIO | None = None) -> dict[str, Any]:
    """Train `cfg` into `out_dir`; returns the run record. Raises ConfigError (bad input) or NonFiniteLoss."""
    stream = stream or sys.stderr
    ctx = parallel.init_distributed(cfg.train.device)
    out = Path(out_dir)
    created = not out.exists()
    try:
        plan = resolve_plan(cfg, ctx.world_size)
        check_run_dir(out, cfg, resume=resume)
        if resume and (out / "run.json").is_file():
            return json.loads((out / "run.json").read_text())
        corpus_fingerprint(cfg.data)  # a missing or unreadable corpus is bad input: fail before writing
        parallel.barrier(ctx)  # every rank checked the directory before rank 0 writes into it
        if ctx.is_main and not resume:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", cfg.to_dict())
            write_json(out / "plan.json", plan.to_dict())
        console = ConsoleProgress(plan.steps, stream) if ctx.is_main else None
        if console:
            console.message(describe(plan))
        with parallel.main_first(ctx):
            data = prepare(cfg.data, progress=console.message if console else None)
        if ctx.is_main and not (out / "tokenizer").exists():  # copied whole, then renamed: never half there
            tmp = out / f".tokenizer.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(data.directory / "tokenizer", tmp)
            os.replace(tmp, out / "tokenizer")
    except ConfigError:
        if created and ctx.is_main:
            shutil.rmtree(out, ignore_errors=True)  # no half-written run for bad input
        parallel.shutdown(ctx)
        raise
    try:
        return _train(cfg, plan, data, out, ctx, console, resume=resume)
    finally:
        parallel.shutdown(ctx)


def _train(cfg: ExperimentConfig, plan: RunPlan, data: PreparedData, out: Path, ctx: parallel.DistContext,
           console: ConsoleProgress | None, *, resume: bool) -> dict[str, Any]:
    t = cfg.train
    model_cfg = cfg.model_config
    torch.manual_seed(t.seed)
    raw_model = model_cfg.build().to(ctx.device)
    built = sum(p.numel() for p in raw_model.parameters())
    assert built == plan.params["total"], f"counting says {plan.params['total']} parameters, model has {built}"
    model = parallel.parallelize(raw_model, ctx, strategy=t.parallel, compile=t.compile)
    optimizer = cfg.optim.build(model)
    loader = TrainLoader(data.tokens("train"), seq_len=plan.seq_len, global_batch=plan.global_batch, seed=t.seed,
                         rank=ctx.rank, world_size=ctx.world_size,
                         bos_id=data.tokenizer.eot_id if cfg.data.bos_at_window_start else None)
    token_bytes_V = token_bytes(data.tokenizer, model_cfg.vocab_size, data.byte_share("val"))
    also = _extra_eval_sets(cfg, data, out, ctx, console)

    metrics = MetricsFile(out / "metrics.jsonl")
    tensorboard = TensorBoard(out / "tb") if cfg.log.tensorboard and ctx.is_main else None
    start_step, elapsed, wall_before = 0, 0.0, 0.0
    path = checkpoint.latest(out) if resume else None
    if resume and path is None and ctx.is_main:
        metrics.truncate_after(0)
        console.message("no checkpoint yet: starting from step 0")
    if path is not None:
        model_state, optim_state, state = checkpoint.load(path)
        parallel.load_full_state(model, optimizer, model_state, optim_state)
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        start_step, elapsed = state["step"], state["elapsed_s"]
        wall_before = state.get("wall_s", elapsed)  # checkpoints before 2026-11-22 kept one figure
        if ctx.is_main:
            metrics.truncate_after(start_step)
            console.message(f"resumed from {path.name}")

    def record(entry: dict[str, Any]) -> None:
        if ctx.is_main:
            metrics.write(entry)
            if tensorboard:
                tensorboard.write(entry)

    # a model whose training routing differs from its sampling routing (MoD with a predictor or router BCE) is
    # also scored with the causal rule: val_loss_causal. Not under FSDP: the causal rule runs the routed block
    # once per sequence that routes a token, so ranks could disagree on the number of collective forwards.
    samples_causally = t.parallel != "fsdp" and raw_model.has_causal_rule()

    def run_eval(step: int) -> dict[str, Any]:
        batches = val_batches(data.tokens("val"), plan.seq_len, plan.micro_batch, cfg.eval.batches)
        eval_model = model if t.parallel == "fsdp" else raw_model  # FSDP's forward is collective
        result = {"kind": "eval", "step": step,
                  **evaluate(eval_model, batches, token_bytes_V, device=ctx.device, precision=t.precision)}
        if samples_causally:  # the rule sampling uses (MoD's predictor): what the model is worth at inference
            raw_model.use_causal_routing(True)
            try:
                batches = val_batches(data.tokens("val"), plan.seq_len, plan.micro_batch, cfg.eval.batches)
                r = evaluate(eval_model, batches, token_bytes_V, device=ctx.device, precision=t.precision)
            finally:
                raw_model.use_causal_routing(False)
            result["val_loss_causal"], result["val_bpb_causal"] = r["val_loss"], r["val_bpb"]
        for name, (tokens, bytes_V) in also.items():
            r = evaluate(eval_model, val_batches(tokens, plan.seq_len, plan.micro_batch, cfg.eval.batches), bytes_V,
                         device=ctx.device, precision=t.precision)
            result[f"val_loss@{name}"], result[f"val_bpb@{name}"] = r["val_loss"], r["val_bpb"]
        record(result)
        if console:
            console.message(f"step {step}: val loss {result['val_loss']:.4f}, {result['val_bpb']:.4f} bits/byte"
                            + (f", causal routing {result['val_loss_causal']:.4f}" if samples_causally else "")
                            + "".join(f", {name} {result[f'val_loss@{name}']:.4f}" for name in also))
        return result

    clock = {"start": time.perf_counter(), "before": wall_before}

    def save(step: int, training_s: float) -> None:
        """Checkpoint `step`; the state keeps the training seconds (metrics' elapsed_s) and the wall seconds."""
        model_state, optim_state = parallel.full_state(model, optimizer)
        if ctx.is_main:
            wall_s = clock["before"] + time.perf_counter() - clock["start"]
            checkpoint.save(out, step, model_state, optim_state,
                            {"loader": loader.state_dict(), "elapsed_s": training_s, "wall_s": wall_s},
                            keep=cfg.checkpoint.keep)
        parallel.barrier(ctx)

    def on_step(entry: dict[str, Any]) -> None:
        entry["flops_per_s"] = entry["tokens_per_s"] * plan.flops_per_token
        if cfg.log.peak_flops:
            entry["mfu"] = entry["flops_per_s"] / (cfg.log.peak_flops * ctx.world_size)
        record({"kind": "train", **entry})
        if console:
            console.step(entry)

    def after_step(step: int, training_s: float) -> None:
        if cfg.eval.every and step % cfg.eval.every == 0 and step < plan.steps:
            run_eval(step)
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < plan.steps:
            save(step, training_s)

    extra_loss = None
    if cfg.distill.active:
        from isoflop.train.artifacts import load_model
        from isoflop.train.distill import distillation_loss

        extra_loss = distillation_loss(cfg.distill, load_model(cfg.distill.teacher).to(ctx.device))
    callbacks = LoopCallbacks(next_batch=loader.next,
                              lr_at=lambda s: cfg.optim.lr * cfg.schedule.multiplier(s, plan.steps),
                              on_step=on_step, after_step=after_step, extra_loss=extra_loss)
    try:
        elapsed = train_loop(model, optimizer, plan, start_step=start_step, grad_clip=t.grad_clip,
                             precision=t.precision, ctx=ctx, callbacks=callbacks, elapsed_s=elapsed,
                             log_every=cfg.log.every)
    except NonFiniteLoss:
        if console:
            console.close()
        raise
    if console:
        console.close()
    final = run_eval(plan.steps)
    save(plan.steps, elapsed)
    wall = clock["before"] + time.perf_counter() - clock["start"]
    result = run_record(cfg, plan, data, final, wall, elapsed, ctx)
    if ctx.is_main:
        write_json(out / "run.json", result)
        if tensorboard:
            tensorboard.close()
    return result


def _extra_eval_sets(cfg: ExperimentConfig, data: PreparedData, out: Path, ctx: parallel.DistContext,
                     console: ConsoleProgress | None) -> dict[str, tuple[Any, torch.Tensor]]:
    """eval.also: name -> (validation tokens, token bytes) of each extra corpus, tokenized like the run."""
    sets: dict[str, tuple[Any, torch.Tensor]] = {}
    saved = cfg.data.tokenizer.path or str(out / "tokenizer")
    for corpus in cfg.eval.also:
        name = "stdlib" if corpus == "stdlib" else Path(corpus).name
        tok = replace(cfg.data.tokenizer, path=saved)
        with parallel.main_first(ctx):
            extra = prepare(replace(cfg.data, corpus=corpus, tokenizer=tok),
                            progress=console.message if console else None)
        sets[name] = (extra.tokens("val"), token_bytes(extra.tokenizer, cfg.model_config.vocab_size,
                                                        extra.byte_share("val")))
    return sets


def run_record(cfg: ExperimentConfig, plan: RunPlan, data: PreparedData, final: dict[str, Any],
               wall_s: float, training_s: float, ctx: parallel.DistContext) -> dict[str, Any]:
    """The record the science verbs read (DESIGN.md: run.json)."""
    groups = param_groups(cfg.model_config)
    train_meta = data.meta["splits"]["train"]
    bytes_per_token = train_meta["n_bytes"] / max(train_meta["n_tokens"], 1)
    return {
        "N_total": groups.total, "N_active": groups.active, "N_non_embedding": groups.non_embedding,
        "N_embedding": groups.embedding, "D_tokens": plan.tokens, "D_bytes": round(plan.tokens * bytes_per_token),
        "flops": plan.flops, "flops_per_token": plan.flops_per_token, "steps": plan.steps,
        "seq_len": plan.seq_len, "val_loss": final["val_loss"], "val_bpb": final["val_bpb"],
        **{k: final[k] for k in ("val_loss_causal", "val_bpb_causal") if k in final},
        "wall_time_s": wall_s, "training_time_s": training_s, "world_size": ctx.world_size, "device": str(ctx.device.type),
        "tokenizer": data.meta["tokenizer"]["kind"], "vocab_size": data.tokenizer.vocab_size,
        "torch": torch.__version__,
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The first dotted key where two config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the top level"
