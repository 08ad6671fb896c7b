"""The Trainer: one run in its run directory, as methods that read in the order they run.

    trainer = Trainer(cfg, plan, RunDir(out), ctx, resume=False)
    trainer.open(); trainer.build(); trainer.resume(); trainer.train()
    record = trainer.finish()    # run.py's run_training drives it so, after checking the input

- open     write the config and the plan (and the init record) before any compute, prepare the token shards, copy
           the tokenizer
- build    model (counted == built), parallelism, optimizer, data loader, evaluation sets, distillation
- resume   the newest checkpoint's weights, optimizer, loader position, RNG and clocks; else the init source's
           (init_from.py), else step 0
- train    the optimizer steps; every log.every a metrics record, every eval.every an evaluation, every
           checkpoint.every (and at each checkpoint.at) a checkpoint (the last two pause the training clock).
           A stop signal (signals.py) checkpoints the step it ends and raises Preempted
- evaluate the validation loss (and the causal-routing and extra-corpus losses) at a step
- save     a checkpoint at a step
- finish   the final evaluation and checkpoint, then the RunRecord, written last
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import torch

from isoflop.data.loader import TrainLoader
from isoflop.data.shards import TOKENIZER_DIR, PreparedData, prepare_shards
from isoflop.rundir import EVAL, TRAIN, RunDir, RunRecord
from isoflop.train import checkpoint, parallel
from isoflop.train.clock import TrainingClock
from isoflop.train.evaluate import EvalSet, evaluate_run
from isoflop.train.init_from import InitSource, Start, initialise
from isoflop.train.reporters import ConsoleProgress, TensorBoard
from isoflop.train.run_plan import RunPlan, describe
from isoflop.train.signals import StopSignals
from isoflop.train.spec import ExperimentConfig
from isoflop.train.step import ExtraLoss, NonFiniteLoss, OptimizerStep, Preempted, StepResult


class Trainer:
    def __init__(self, cfg: ExperimentConfig, plan: RunPlan, run: RunDir, ctx: parallel.DistContext, *,
                 resume: bool = False, init: InitSource | None = None, stream: TextIO | None = None,
                 now: Callable[[], float] = time.perf_counter):
        """`init`: the checkpoint of another run the weights come from (a run without its own checkpoint yet);
        `now` is the clock's time source (seconds; tests give a fake one)."""
        self.cfg, self.plan, self.run_dir, self.ctx, self.resuming = cfg, plan, run, ctx, resume
        self.init = init
        self.console = ConsoleProgress(plan.steps, stream or sys.stderr) if ctx.is_main else None
        self.now = now
        self.clock: TrainingClock | None = None  # started by resume(), which knows the seconds already spent
        self.start_step = 0
        self.at_step: int | None = None  # the step being worked on (failure records name it)

    # ------------------------------------------------------------------ open and build
    def open(self) -> None:
        """The run directory's config and plan (rank 0, fresh runs), the shards, the tokenizer copy."""
        if self.ctx.is_main and not self.resuming:
            self.run_dir.write_config(self.cfg.to_dict())
            self.run_dir.write_plan(self.plan.to_dict())
            if self.init is not None:
                self.run_dir.write_init(self.init.to_dict())
        self._say(describe(self.plan))
        with parallel.main_first(self.ctx):
            self.data = prepare_shards(self.cfg.data, progress=self._say if self.console else None)
        if self.ctx.is_main:
            self.run_dir.copy_tokenizer(self.data.directory / TOKENIZER_DIR)

    def build(self) -> None:
        cfg, t, ctx = self.cfg, self.cfg.train, self.ctx
        torch.manual_seed(t.seed)
        self.raw_model = cfg.resolved_model.build().to(ctx.device)
        built = sum(p.numel() for p in self.raw_model.parameters())
        assert built == self.plan.params["total"], f"counting says {self.plan.params['total']} parameters, model has {built}"
        self.model = parallel.parallelize(self.raw_model, ctx, strategy=t.parallel, compile=t.compile)
        self.optimizer = cfg.optim.build(self.model)
        self.loader = TrainLoader(self.data.tokens("train"), seq_len=self.plan.seq_len,
                                  global_batch=self.plan.global_batch, seed=t.seed, rank=ctx.rank,
                                  world_size=ctx.world_size,
                                  bos_id=self.data.tokenizer.eot_id if cfg.data.bos_at_window_start else None)
        self.val_set = EvalSet.of(self.data, cfg.resolved_model.vocab_size)
        self.extra_sets = self._extra_eval_sets()
        # a model whose training routing differs from its sampling routing (MoD with a predictor or router BCE)
        # is also scored with the causal rule. Not under FSDP: that rule runs the routed block once per sequence
        # that routes a token, so ranks could disagree on the number of collective forwards.
        self.scores_causally = t.parallel != "fsdp" and self.raw_model.has_causal_rule()
        self.step = OptimizerStep(self.model, self.optimizer, grad_accum=self.plan.grad_accum, grad_clip=t.grad_clip,
                                  precision=t.precision, ctx=ctx, extra_loss=self._distillation())
        self.tensorboard = TensorBoard(self.run_dir.tensorboard_dir) if cfg.log.tensorboard and ctx.is_main else None

    def _extra_eval_sets(self) -> dict[str, EvalSet]:
        """eval.also: name -> the validation split of each extra corpus, tokenized with the run's tokenizer."""
        cfg, sets = self.cfg, {}
        saved = cfg.data.tokenizer.path or str(self.run_dir.tokenizer_dir)
        for corpus in cfg.eval.also:
            name = "stdlib" if corpus == "stdlib" else Path(corpus).name
            data_cfg = replace(cfg.data, corpus=corpus, tokenizer=replace(cfg.data.tokenizer, path=saved))
            with parallel.main_first(self.ctx):
                extra: PreparedData = prepare_shards(data_cfg, progress=self._say if self.console else None)
            sets[name] = EvalSet.of(extra, cfg.resolved_model.vocab_size)
        return sets

    def _distillation(self) -> ExtraLoss | None:
        """The extra loss against the teacher run (distill.teacher), or None."""
        if not self.cfg.distill.active:
            return None
        from isoflop.train.artifacts import load_model
        from isoflop.train.distill import distillation_loss

        with torch.random.fork_rng(devices=[]):  # the teacher's throwaway init must not move the student's RNG
            teacher = load_model(self.cfg.distill.teacher).to(self.ctx.device)
        return distillation_loss(self.cfg.distill, teacher)

    # ------------------------------------------------------------------ resume
    def resume(self) -> None:
        """Continue from the newest checkpoint when resuming, else from the init source, else at step 0; the
        metrics log is cut back to the start (or, continuing the source's data, is the source's up to it)."""
        path = self.run_dir.latest_checkpoint() if self.resuming else None
        start = Start()
        if path is not None:
            model_state, optim_state, state = checkpoint.load(path)
            parallel.load_full_state(self.model, self.optimizer, model_state, optim_state)
            self.loader.load_state_dict(state["loader"])
            torch.set_rng_state(state["rng"]["torch"])
            # checkpoints before 2026-11-22 kept one figure for both clocks
            start = Start(state["step"], state["elapsed_s"], state.get("wall_s", state["elapsed_s"]))
        elif self.init is not None:
            start = initialise(self.init, raw_model=self.raw_model, model=self.model, optimizer=self.optimizer,
                               loader=self.loader, optimizer_kind=self.cfg.optim.kind)
            self._say(f"initialised from {self.init.describe()}")
        self.start_step = start.step
        if self.ctx.is_main:
            if path is None and self.init is not None and self.init.data:
                self.run_dir.metrics.replace_with(RunDir(self.init.run).metrics, self.start_step)
            elif self.resuming:
                self.run_dir.metrics.truncate_after(self.start_step)
        if self.resuming:
            self._say(f"resumed from {path.name}" if path is not None else "no checkpoint yet: starting afresh")
        self.clock = TrainingClock(start.training_s, start.wall_s, now=self.now)

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """Steps start_step .. plan.steps - 1; raises NonFiniteLoss (the last good checkpoint is kept), or
        Preempted after checkpointing the step a stop signal arrived in."""
        assert self.clock is not None
        # training seconds and tokens at the last logged step: throughput is measured between logs
        self._last_log = (self.clock.training_s, self.start_step * self.plan.tokens_per_step)
        try:
            with StopSignals() as stop:
                self._steps(stop)
        finally:
            if self.console:
                self.console.close()

    def _steps(self, stop: StopSignals) -> None:
        assert self.clock is not None
        cfg, plan = self.cfg, self.plan
        for step in range(self.start_step, plan.steps):
            done = self.at_step = step + 1
            inputs_BT, targets_BT = self.loader.next()
            lr = cfg.optim.lr * cfg.schedule.multiplier(step, plan.steps)
            logs = done % cfg.log.every == 0 or done == plan.steps
            result = self.step(inputs_BT, targets_BT, lr, log=logs)
            if not math.isfinite(result.loss):
                raise NonFiniteLoss(done, result.loss)
            with self.clock.paused():  # logging, evaluation and checkpoints are not training time
                if logs:
                    self._log_step(done, lr, result)
                if done == plan.steps:
                    break  # finish() evaluates and checkpoints the last step
                if cfg.eval.every and done % cfg.eval.every == 0:
                    self.evaluate(done)
                saved = cfg.checkpoint.saves_at(done)
                if saved:
                    self.save(done)
                if parallel.any_rank(stop.requested, self.ctx):  # every rank stops at the same step
                    if not saved:
                        self.save(done)
                    raise Preempted(done, stop.signum)

    def _log_step(self, done: int, lr: float, result: StepResult) -> None:
        assert self.clock is not None
        plan, training_s = self.plan, self.clock.training_s
        tokens = done * plan.tokens_per_step
        since_s, since_tokens = training_s - self._last_log[0], tokens - self._last_log[1]
        self._last_log = (training_s, tokens)
        entry: dict[str, Any] = {
            "step": done, "loss": result.loss, "lr": lr, "grad_norm": result.grad_norm, "tokens": tokens,
            "flops": tokens * plan.flops_per_token, "tokens_per_s": since_tokens / max(since_s, 1e-9),
            "elapsed_s": training_s, **result.logged}
        entry["flops_per_s"] = entry["tokens_per_s"] * plan.flops_per_token
        if self.cfg.log.peak_flops:
            entry["mfu"] = entry["flops_per_s"] / (self.cfg.log.peak_flops * self.ctx.world_size)
        self._record(TRAIN, entry)
        if self.console:
            self.console.step(entry)

    # ------------------------------------------------------------------ evaluate, save, finish
    def evaluate(self, step: int) -> dict[str, Any]:
        """The evaluation record at `step`: val_loss and val_bpb, val_loss_causal (MoD's sampling rule), and
        val_loss@<corpus> for each extra corpus; logged and shown."""
        cfg, plan, t = self.cfg, self.plan, self.cfg.train
        model = self.model if t.parallel == "fsdp" else self.raw_model  # FSDP's forward is collective

        def score(eval_set: EvalSet, causal: bool = False) -> dict[str, float]:
            return evaluate_run(model, eval_set, seq_len=plan.seq_len, batch_size=plan.micro_batch,
                                batches=cfg.eval.batches, device=self.ctx.device, precision=t.precision, causal=causal)

        result: dict[str, Any] = {"step": step, **score(self.val_set)}
        if self.scores_causally:
            causal = score(self.val_set, causal=True)
            result["val_loss_causal"], result["val_bpb_causal"] = causal["val_loss"], causal["val_bpb"]
        for name, eval_set in self.extra_sets.items():
            r = score(eval_set)
            result[f"val_loss@{name}"], result[f"val_bpb@{name}"] = r["val_loss"], r["val_bpb"]
        self._record(EVAL, result)
        self._say(f"step {step}: val loss {result['val_loss']:.4f}, {result['val_bpb']:.4f} bits/byte"
                  + (f", causal routing {result['val_loss_causal']:.4f}" if self.scores_causally else "")
                  + "".join(f", {name} {result[f'val_loss@{name}']:.4f}" for name in self.extra_sets))
        return result

    def save(self, step: int) -> None:
        """Checkpoint `step` (collective under FSDP); it keeps the training and the wall seconds so far."""
        assert self.clock is not None
        model_state, optim_state = parallel.full_state(self.model, self.optimizer)
        if self.ctx.is_main:
            state = {"loader": self.loader.state_dict(), "elapsed_s": self.clock.training_s, "wall_s": self.clock.wall_s}
            checkpoint.save(self.run_dir, step, model_state, optim_state, state, keep=self.cfg.checkpoint.keep,
                            protect=self.cfg.checkpoint.at)
        parallel.barrier(self.ctx)

    def finish(self) -> RunRecord:
        """The final evaluation and checkpoint, then the run record, which marks the run complete (and clears
        a failure record of an earlier attempt). A stop signal meanwhile is ignored: the run is finishing."""
        assert self.clock is not None
        self.at_step = self.plan.steps
        training_s = self.clock.training_s
        with StopSignals(), self.clock.paused():
            final = self.evaluate(self.plan.steps)
            self.save(self.plan.steps)
        record = self._record_of(final, training_s)
        if self.ctx.is_main:
            self.run_dir.clear_failure()
            self.run_dir.write_record(record)
            if self.tensorboard:
                self.tensorboard.close()
        return record

    def _record_of(self, final: dict[str, Any], training_s: float) -> RunRecord:
        assert self.clock is not None
        plan, data, params = self.plan, self.data, self.plan.params
        train_split = data.meta["splits"]["train"]
        bytes_per_token = train_split["n_bytes"] / max(train_split["n_tokens"], 1)
        return RunRecord(
            N_total=params["total"], N_active=params["active"], N_non_embedding=params["non_embedding"],
            N_embedding=params["embedding"], D_tokens=plan.tokens, D_bytes=round(plan.tokens * bytes_per_token),
            flops=plan.flops, flops_per_token=plan.flops_per_token, steps=plan.steps, seq_len=plan.seq_len,
            val_loss=final["val_loss"], val_bpb=final["val_bpb"], val_loss_causal=final.get("val_loss_causal"),
            val_bpb_causal=final.get("val_bpb_causal"), wall_time_s=self.clock.wall_s, training_time_s=training_s,
            world_size=self.ctx.world_size, device=str(self.ctx.device.type), tokenizer=data.meta["tokenizer"]["kind"],
            vocab_size=data.tokenizer.vocab_size, torch=torch.__version__)

    # ------------------------------------------------------------------ output
    def _record(self, kind: str, entry: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.run_dir.metrics.append(kind, entry)
            if self.tensorboard:
                self.tensorboard.write(entry)

    def _say(self, text: str) -> None:
        if self.console:
            self.console.message(text)
