"""rope-extrapolation: one model trained at a short length, evaluated far past it with each RoPE kind switched
on at evaluation time: Position Interpolation (Chen et al. 2023), NTK-aware and dynamic NTK scaling (Su,
kexue.fm 9675), YaRN (Peng et al. 2023), Llama 3's interpolation (Meta 2024), ReRoPE and Leaky ReRoPE with log-n
scaling (Su, kexue.fm 9706 / 9708); nn/rope.py has each kind's formula.

The weights never change; only `model.rope` does, with the extension factor s = L / L_train at each evaluated
length L (1 at and below the training length, where every kind with a factor is plain RoPE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from isoflop.recipes.baseline import tiny
from isoflop.rundir import RunDir
from isoflop.studies import Study
from isoflop.train.spec import CheckpointConfig, EvalConfig, ExperimentConfig, HorizonConfig

TRAIN_LEN = 128
#: Evaluated lengths as multiples of the training length: 1x to 16x.
LENGTH_MULTIPLES = (1, 2, 4, 8, 16)
#: Validation batches per length; a batch at L holds micro_batch * L_train / L sequences, so every length
#: scores the same number of tokens (the same text: the split's first windows).
EVAL_BATCHES = 8


def _kinds(train_len: int) -> dict[str, Callable[[int], list[str]]]:
    """Label -> the `model.rope` overrides used at length L. Windows follow Su (9708): ReRoPE's best w is 1/4 to
    1/2 of the training length; Leaky ReRoPE w = L_train / 4 with k = 16 (the patch's default)."""
    T = train_len

    def s(length: int) -> float:
        return max(1.0, length / T)

    return {
        "default": lambda L: [],
        "linear (PI)": lambda L: ["model.rope.kind=linear", f"model.rope.factor={s(L)}"],
        "ntk": lambda L: ["model.rope.kind=ntk", f"model.rope.factor={s(L)}"],
        "ntk + log n": lambda L: ["model.rope.kind=ntk", f"model.rope.factor={s(L)}", f"model.rope.log_n_length={T}"],
        # factor 1 makes Hugging Face's dynamic formula the paper's s = L / L_train at every length
        "dynamic": lambda L: ["model.rope.kind=dynamic", "model.rope.factor=1.0",
                              f"model.rope.original_max_position_embeddings={T}"],
        "yarn": lambda L: ["model.rope.kind=yarn", f"model.rope.factor={s(L)}",
                           f"model.rope.original_max_position_embeddings={T}"],
        "llama3": lambda L: ["model.rope.kind=llama3", f"model.rope.factor={s(L)}",
                             f"model.rope.original_max_position_embeddings={T}"],
        f"rerope w{T // 2}": lambda L: ["model.rope.kind=rerope", f"model.rope.window={T // 2}"],
        f"rerope w{T // 2} + log n": lambda L: ["model.rope.kind=rerope", f"model.rope.window={T // 2}",
                                                f"model.rope.log_n_length={T}"],
        f"leaky_rerope w{T // 4} k16": lambda L: ["model.rope.kind=leaky_rerope", f"model.rope.window={T // 4}",
                                                  "model.rope.k=16"],
    }


def layout_runs(train_len: int) -> dict[str, tuple[list[str], dict[str, Callable[[int], list[str]]]]]:
    """Hybrid Window-Full Attention runs (Su 9603 / 9731): run name -> (training overrides, {eval label:
    overrides at length L}). HWFA (windows with RoPE, a NoPE + log-n full top layer) is evaluated as trained;
    HWFA2 (a RoPE full layer mid-stack) as trained and with ReRoPE (w = L_train / 2) on its full layer.
    Window widths follow Su's rule, computed by the layout config. Empty when ModelConfig has no `layout`."""
    from isoflop.nn.config import ModelConfig

    if "layout" not in ModelConfig.__dataclass_fields__:
        return {}
    w = train_len // 2
    return {"hwfa": (["model.layout.kind=hwfa"], {"hwfa": lambda L: []}),
            "hwfa2": (["model.layout.kind=hwfa2"], {"hwfa2": lambda L: [],
                                                    f"hwfa2 + rerope w{w}": lambda L: [f"model.layout.rerope_window={w}"]})}


def full_base() -> ExperimentConfig:
    """`tiny` (d128, 4 layers, BPE 2048 on the stdlib corpus) at seq_len 128 for 400 steps (819k tokens)."""
    cfg = tiny()
    return replace(cfg, data=replace(cfg.data, seq_len=TRAIN_LEN),
                   train=replace(cfg.train, horizon=HorizonConfig(steps=400)),
                   eval=EvalConfig(every=200, batches=10), checkpoint=CheckpointConfig(every=200, keep=1))


def smoke_base() -> ExperimentConfig:
    from isoflop.config import apply_overrides

    overrides = ["data.tokenizer.kind=byte", "data.max_bytes=300000", "data.seq_len=32", "model.d_model=32",
                 "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "train.horizon.steps=12",
                 "train.batch_size=8", "eval.every=0", "eval.batches=2", "checkpoint.every=0", "log.every=4"]
    return ExperimentConfig.from_dict(apply_overrides(tiny().to_dict(), overrides, ExperimentConfig))


def measure_lengths(run_dir: Path, kinds: dict[str, Callable[[int], list[str]]], lengths: list[int],
                    n_batches: int) -> list[dict[str, Any]]:
    """Validation loss and bits/byte of the run's final weights for each (kind, length): one record each."""
    import torch

    from isoflop.data.shards import prepare_shards
    from isoflop.train.artifacts import load_config, load_model
    from isoflop.train.evaluate import EvalSet, batch_size_at, evaluate_run

    cfg = load_config(run_dir)
    eval_set = EvalSet.of(prepare_shards(cfg.data), cfg.resolved_model.vocab_size)
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    theta = cfg.model.rope.theta
    out = []
    for label, overrides_at in kinds.items():
        for length in lengths:
            overrides = overrides_at(length)
            if any(o.startswith("model.rope.kind=") for o in overrides):  # keep the base
                overrides = overrides + [f"model.rope.theta={theta}"]
            model = load_model(run_dir, overrides=overrides)
            batch = batch_size_at(length, micro_batch=micro, train_seq_len=cfg.data.seq_len)
            r = evaluate_run(model, eval_set, seq_len=length, batch_size=batch, batches=n_batches,
                             device=torch.device("cpu"))
            out.append({"kind": label, "seq_len": length, "val_loss": r["val_loss"], "val_bpb": r["val_bpb"],
                        "val_tokens": r["val_tokens"], "overrides": overrides})
    return out


class RopeExtrapolation(Study):
    name = "rope-extrapolation"
    description = "train at 128 tokens, evaluate to 16x longer with each RoPE extension switched on at eval"
    claim = ("Plain RoPE fails past its training length; eval-time extensions keep the loss bounded without "
             "training: NTK-aware scaling and YaRN stay close, ReRoPE/Leaky ReRoPE (with log n) extrapolate best, "
             "and linear interpolation hurts without fine-tuning (Su, kexue.fm 9675/9706/9708; Peng et al. 2023).")

    def runs(self, out: Path, *, smoke: bool) -> dict[str, ExperimentConfig]:
        from isoflop.config import ConfigError, apply_overrides

        base = smoke_base() if smoke else full_base()
        runs = {"rope": base}
        for name, (overrides, _) in layout_runs(base.data.seq_len).items():
            try:
                runs[name] = ExperimentConfig.from_dict(apply_overrides(base.to_dict(), overrides, ExperimentConfig))
            except ConfigError:  # the layout family exists but not with these knobs: leave the hook unused
                continue
        return runs

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        from isoflop.train.artifacts import load_config

        cfg = load_config(run_dirs["rope"].path)
        T = cfg.data.seq_len
        lengths = [T * m for m in (LENGTH_MULTIPLES[:3] if smoke else LENGTH_MULTIPLES)]
        n_batches = 2 if smoke else EVAL_BATCHES
        records = measure_lengths(run_dirs["rope"].path, _kinds(T), lengths, n_batches)
        for name, (_, eval_kinds) in layout_runs(T).items():
            if name in run_dirs:
                records += measure_lengths(run_dirs[name].path, eval_kinds, lengths, n_batches)
        labels = list(dict.fromkeys(r["kind"] for r in records))
        rows, series = [], []
        for label in labels:
            mine = {r["seq_len"]: r for r in records if r["kind"] == label}
            rows.append({"kind": label, **{f"L{n}": mine[n]["val_loss"] for n in lengths}})
            series.append({"label": label, "x": lengths, "y": [mine[n]["val_loss"] for n in lengths],
                           "style": "o-" if "rerope" not in label else "s--"})
        far = lengths[-1]
        ranked = sorted(rows, key=lambda r: r[f"L{far}"])
        default = next(r for r in rows if r["kind"] == "default")
        findings = [
            f"At the training length ({T}) every kind with a factor equals plain RoPE (s = 1); ReRoPE differs "
            f"slightly because it clips distances past its window even inside the training length.",
            f"Plain RoPE at {far} tokens: loss {default[f'L{far}']:.3f} vs {default[f'L{T}']:.3f} at {T}.",
            f"Best at {far}: {ranked[0]['kind']} ({ranked[0][f'L{far}']:.3f}); worst: {ranked[-1]['kind']} "
            f"({ranked[-1][f'L{far}']:.3f}). Order at {far}: " + ", ".join(r["kind"] for r in ranked) + ".",
        ]
        findings.append("`dynamic` equals `ntk` here by construction: a whole window is scored in one forward, so "
                        "dynamic NTK's s = L / L_train is the static factor used for `ntk`.")
        if "hwfa" in run_dirs:
            findings.append("HWFA rows are separately trained models (same data, steps and seed): compare how their "
                            "loss changes with length, not their level at the training length.")
        else:
            findings.append("HWFA / HWFA2 rows are absent: ModelConfig has no `layout` field yet (hook "
                            "`layout_runs` in studies/rope_extrapolation.py).")
        m = cfg.model
        record = run_dirs["rope"].read_record()
        setting = (f"{'SMOKE (seconds-long, not a measurement): ' if smoke else ''}one model (d_model {m.d_model}, "
                   f"{m.n_layers} layers, {m.n_heads} heads, head_dim {m.head_dim}, RoPE theta "
                   f"{m.rope.theta:g}), {cfg.data.tokenizer.kind} tokenizer on `{cfg.data.corpus}`, "
                   f"trained at seq_len {T} for {record.D_tokens:,} tokens (final val loss "
                   f"{record.val_loss:.4f}). Each length is scored on the same "
                   f"~{records[0]['val_tokens']:,} validation tokens (the split's first windows); loss in nats per "
                   f"token, averaged over all positions of each window. Factor-based kinds use s = L / {T}.")
        return {
            "study": self.name, "title": f"RoPE extrapolation from {T} tokens", "claim": self.claim,
            "setting": setting, "findings": findings,
            "columns": [{"key": "kind", "label": "eval-time RoPE", "format": "s"}] +
                       [{"key": f"L{n}", "label": f"L={n}", "format": ".3f"} for n in lengths],
            "rows": rows,
            "plot": {"title": f"rope-extrapolation: trained at {T}", "panels": [
                {"title": "validation loss against evaluation length", "xlabel": "sequence length (tokens)",
                 "ylabel": "val loss (nats/token)", "xscale": "log2", "series": series,
                 "ylim": _ylim([r["val_loss"] for r in records])}]},
            "data": {"train_seq_len": T, "lengths": lengths, "evaluations": records, "run": record.to_dict()},
        }


def _ylim(values: list[float]) -> tuple[float, float]:
    """Cut the plot above 10x the spread of the better half, so one exploding kind does not flatten the rest."""
    ordered = sorted(values)
    lo, mid = ordered[0], ordered[len(ordered) // 2]
    hi = min(ordered[-1], mid + 10 * max(mid - lo, 0.05))
    return lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
