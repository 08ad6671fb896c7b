"""sparse-isoflop: at equal training FLOPs, Mixture of Depths beats the dense model it is built from, and a top-2
MoE with the same active FLOPs per token is no worse (Raposo et al. 2024, "Mixture-of-Depths", arXiv 2404.02258,
isoFLOP analysis; Fedus et al. 2022, "Switch Transformers").

Runs: the `tiny`, `moe-tiny`, `mod-tiny` and `mode-tiny` recipes. The dense run takes DENSE_STEPS steps. Each
sparse run takes as many steps as give the same training FLOPs, counted from its config
(`nn.counting.flops_per_token`, a pure function of it). All runs share the batch, seed and data order, and each
has a learning-rate schedule over its own steps. A variant cheaper per token therefore sees more tokens. That is
the iso-FLOP comparison of the MoD paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from isoflop.recipes.baseline import tiny
from isoflop.recipes.sparse import mod_tiny, mode_tiny, moe_tiny
from isoflop.rundir import RunDir
from isoflop.studies import Study
from isoflop.train.spec import ExperimentConfig

#: Three times the recipes' 240 steps: at 240 the sparse variants have not caught up yet (LOG.md, 2026-11-22).
DENSE_STEPS = 720
SMOKE_DENSE_STEPS = 12
#: Seeds 0, 1, 2 of `tiny` at 720 steps end at 3.509, 3.482, 3.533 (sd 0.026), so one seed's difference between
#: two variants has an sd near 0.037; and a last-bit change to the router moved moe-tiny by 0.024 (LOG.md,
#: 2026-11-22, fourth session). Smaller differences are not read as effects.
NOISE_NATS = 0.05
EVALS_PER_RUN = 6
VARIANTS: dict[str, Callable[[], ExperimentConfig]] = {"dense": tiny, "moe": moe_tiny, "mod": mod_tiny,
                                                       "mode": mode_tiny}
LABELS = {"dense": "dense (tiny)", "moe": "MoE top-2 of 8 (moe-tiny)", "mod": "MoD 12.5 % (mod-tiny)",
          "mode": "staged MoDE (mode-tiny)"}


def flops_per_step(cfg: ExperimentConfig) -> float:
    """Training FLOPs of one optimizer step on one process: tokens per step times training FLOPs per token."""
    from isoflop.nn.counting import flops_per_token

    return cfg.train.batch_size * cfg.data.seq_len * flops_per_token(cfg.resolved_model, cfg.data.seq_len).training


def _smoke(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` shrunk to seconds: the byte tokenizer on 200 kB, a 2-layer d32 model; experts stay half the dense
    FFN wide, as in `moe-tiny`."""
    from isoflop.config import apply_overrides

    overrides = ["data.tokenizer.kind=byte", "data.max_bytes=200000", "data.seq_len=32", "model.d_model=32",
                 "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "train.batch_size=8",
                 "eval.batches=2", "log.every=2"]
    small = ExperimentConfig.from_dict(apply_overrides(cfg.to_dict(), overrides, ExperimentConfig))
    ffn = small.model.ffn
    if getattr(ffn, "expert_hidden", None) is not None:
        expert_hidden = _smoke(tiny()).model.ffn_hidden_size // 2
        small = replace(small, model=replace(small.model, ffn=replace(ffn, expert_hidden=expert_hidden)))
    return small


def _with_steps(cfg: ExperimentConfig, steps: int) -> ExperimentConfig:
    """`cfg` trained for `steps`, evaluated EVALS_PER_RUN times at multiples of `log.every` (so every evaluation
    has a logged wall time) and at the end, with no checkpoints but the final one."""
    log_every = cfg.log.every
    every = max(log_every, steps // EVALS_PER_RUN // log_every * log_every)
    return replace(cfg, train=replace(cfg.train, horizon=replace(cfg.train.horizon, steps=steps)),
                   eval=replace(cfg.eval, every=every), checkpoint=replace(cfg.checkpoint, every=0))


class SparseIsoflop(Study):
    name = "sparse-isoflop"
    description = "dense, MoE, MoD and MoDE trained to equal FLOPs: does conditional compute win at equal cost?"
    claim = ("At equal training FLOPs, Mixture-of-Depths transformers (12.5 % capacity on every other block) match "
             "or beat the dense baseline, by up to about 1.5 %, while each step costs fewer FLOPs and runs faster "
             "(Raposo et al. 2024, arXiv 2404.02258: one such model \"steps 66% faster\"). A top-2 MoE with "
             "the dense model's active FLOPs per token is at least as good as it (Fedus et al. 2022).")

    def runs(self, out: Path, *, smoke: bool) -> dict[str, ExperimentConfig]:
        bases = {name: _smoke(make()) if smoke else make() for name, make in VARIANTS.items()}
        budget = (SMOKE_DENSE_STEPS if smoke else DENSE_STEPS) * flops_per_step(bases["dense"])
        return {name: _with_steps(cfg, round(budget / flops_per_step(cfg))) for name, cfg in bases.items()}

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        from isoflop.train.artifacts import load_config

        rows, curves = [], {}
        for name in VARIANTS:
            run = run_dirs[name]
            cfg, record = load_config(run.path), run.read_record()
            per_step = flops_per_step(cfg)
            trains = run.metrics.train_records()
            elapsed = {r["step"]: r["elapsed_s"] for r in trains}
            accuracy = [v for k, v in trains[-1].items() if k.endswith(".predictor_accuracy")]
            evals = [e for e in run.metrics.eval_records() if e["step"] in elapsed]
            curves[name] = {"flops": [e["step"] * per_step for e in evals], "seconds": [elapsed[e["step"]] for e in evals],
                            "val_loss": [e["val_loss"] for e in evals]}
            rows.append({"variant": LABELS[name], "steps": record.steps, "tokens": record.D_tokens,
                         "flops": record.flops, "flops_per_token": record.flops_per_token,
                         "wall_s": trains[-1]["elapsed_s"], "s_per_step": trains[-1]["elapsed_s"] / record.steps,
                         "val_loss": record.val_loss, "val_bpb": record.val_bpb,
                         "val_loss_causal": record.val_loss_causal,
                         "predictor_accuracy": sum(accuracy) / len(accuracy) if accuracy else None,
                         "capacity": getattr(cfg.model.mod, "capacity", None)})
        for row in rows:
            row["delta_vs_dense"] = row["val_loss"] - rows[0]["val_loss"]
        setting = (f"{'SMOKE (seconds-long, not a measurement): ' if smoke else ''}the `tiny`, `moe-tiny`, `mod-tiny` "
                   f"and `mode-tiny` recipes; the dense run trains {rows[0]['steps']} steps, each other run the steps "
                   f"that give the same training FLOPs ({rows[0]['flops']:.3e}) by the counting of `isoflop info`; "
                   "cosine schedule over each run's own steps, same seed, batch and data order; one seed per run. Times are "
                   "training seconds (metrics' elapsed_s): evaluations, which score MoD twice, are left out.")
        return {
            "study": self.name, "title": "Sparse compute at equal training FLOPs", "claim": self.claim,
            "setting": setting, "findings": findings(rows),
            "columns": [{"key": "variant", "label": "variant"},
                        {"key": "steps", "label": "steps", "format": ","},
                        {"key": "tokens", "label": "tokens", "format": ","},
                        {"key": "flops_per_token", "label": "FLOPs/token", "format": ".3e"},
                        {"key": "flops", "label": "training FLOPs", "format": ".3e"},
                        {"key": "wall_s", "label": "training s", "format": ".1f"},
                        {"key": "s_per_step", "label": "s/step", "format": ".3f"},
                        {"key": "val_loss", "label": "final val loss", "format": ".4f"},
                        {"key": "delta_vs_dense", "label": "vs dense", "format": "+.4f"},
                        {"key": "val_bpb", "label": "bits/byte", "format": ".4f"},
                        {"key": "val_loss_causal", "label": "val loss, causal routing", "format": ".4f"},
                        {"key": "predictor_accuracy", "label": "predictor accuracy", "format": ".3f"}],
            "rows": rows,
            "plot": {"title": "sparse-isoflop: equal training FLOPs", "panels": [
                {"title": "validation loss against training FLOPs", "xlabel": "training FLOPs",
                 "ylabel": "val loss (nats/token)", "series": [
                     {"label": LABELS[n], "x": c["flops"], "y": c["val_loss"], "style": "o-"} for n, c in curves.items()]},
                {"title": "validation loss against training time", "xlabel": "seconds of training (evaluations excluded)",
                 "ylabel": "val loss (nats/token)", "series": [
                     {"label": LABELS[n], "x": c["seconds"], "y": c["val_loss"], "style": "o-"} for n, c in curves.items()]}]},
            "data": {"curves": curves},
        }


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """The claim checked against the rows (dense first, then moe, mod, mode)."""
    dense, moe, mod, mode = rows
    out = [f"At {dense['flops']:.3e} training FLOPs, final val loss: " + "; ".join(
        f"{r['variant']} {r['val_loss']:.4f} ({r['delta_vs_dense']:+.4f})" for r in rows) + "."]
    out.append("MoD claim " + _verdict(mod["delta_vs_dense"])
               + f": MoD took {mod['steps']:,} steps against dense's {dense['steps']:,}, "
               f"at {dense['s_per_step'] / mod['s_per_step']:.2f}x dense's steps per second "
               f"(FLOPs predict {dense['flops_per_token'] / mod['flops_per_token']:.2f}x), so "
               f"{mod['wall_s'] / dense['wall_s']:.2f}x dense's training time.")
    out.append("MoE claim " + _verdict(moe["delta_vs_dense"])
               + f": equal active FLOPs per token, {moe['val_loss'] - dense['val_loss']:+.4f} nats, "
               f"{moe['wall_s'] / dense['wall_s']:.2f}x dense's training time.")
    out.append(f"Staged MoDE: {mode['delta_vs_dense']:+.4f} nats against dense at equal FLOPs.")
    for r in (mod, mode):
        if r["val_loss_causal"] is not None and r["predictor_accuracy"] is not None:
            out.append(f"{r['variant']} sampled with its causal predictor (what `isoflop sample` uses) scores "
                       f"{r['val_loss_causal']:.4f}, {r['val_loss_causal'] - r['val_loss']:+.4f} nats from its top-k "
                       f"routing ({r['val_loss_causal'] - dense['val_loss']:+.4f} against dense); the predictor "
                       f"agrees with top-k on {r['predictor_accuracy']:.1%} of tokens in the last logged step, against "
                       f"{1 - r['capacity']:.1%} for always guessing 'not routed' (Raposo et al. report 97 %).")
    out.append("One seed per run. Seeds 0-2 of the dense run end 0.05 nats apart (sd 0.026; LOG.md), so differences "
               f"under {NOISE_NATS} nats are read as ties: rerun with `--set train.seed=N` into another DIR to tell "
               "them apart.")
    return out


def _verdict(delta_vs_dense: float) -> str:
    """Whether a variant's loss difference to dense meets 'match or beat', given run-to-run noise."""
    if delta_vs_dense <= -NOISE_NATS:
        return "holds here (beats dense)"
    if delta_vs_dense <= NOISE_NATS:
        return f"holds here within noise (matches dense to {NOISE_NATS} nats)"
    return "does NOT hold here"
