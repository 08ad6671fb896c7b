"""cosine-stretch: a cosine cycle longer than the run costs loss at the same token count (Hoffmann et al. 2022,
"Training Compute-Optimal Large Language Models", App. B / Fig. A1).

Runs: the `tiny` recipe, narrowed (see `full_base`) and evaluated often, with `schedule.stretch` in STRETCHES; every
run sees the same tokens in the same order from the same initialisation, so only the learning rate differs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from isoflop.recipes.baseline import tiny
from isoflop.rundir import RunDir
from isoflop.studies import Study
from isoflop.train.spec import ExperimentConfig

#: Cycle lengths as multiples of the run (Chinchilla's Fig. A1 compares 1.0 to 5.0; 1.1-1.5 is its "slightly
#: longer" range).
STRETCHES = (1.0, 1.25, 1.5, 2.0, 5.0)


def full_base() -> ExperimentConfig:
    """`tiny` narrowed to a byte-level d_model 64, 2-layer model at seq_len 128, trained for 1500 steps of
    16 x 128 tokens (3.1M tokens, ~25 tokens per parameter), evaluated every 75 steps. A short BPE run
    (LOG.md, 2026-11-22: 400 steps, 4 tokens/param) sat so far from convergence that every longer cycle won;
    the claim is about runs near their compute-optimal length."""
    from isoflop.config import apply_overrides

    overrides = ["data.tokenizer.kind=byte", "model.d_model=64", "model.n_layers=2", "model.n_heads=2",
                 "model.n_kv_heads=1", "data.seq_len=128", "train.horizon.steps=1500", "eval.every=75",
                 "eval.batches=10", "checkpoint.every=0"]
    return ExperimentConfig.from_dict(apply_overrides(tiny().to_dict(), overrides, ExperimentConfig))


def smoke_base() -> ExperimentConfig:
    """`tiny` shrunk to seconds: the byte tokenizer on the first 200 kB of the stdlib corpus, a 2-layer d32 model."""
    from isoflop.config import apply_overrides

    overrides = ["data.tokenizer.kind=byte", "data.max_bytes=200000", "data.seq_len=32", "model.d_model=32",
                 "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "train.horizon.steps=16",
                 "train.batch_size=8", "eval.every=4", "eval.batches=2", "checkpoint.every=0", "log.every=4"]
    return ExperimentConfig.from_dict(apply_overrides(tiny().to_dict(), overrides, ExperimentConfig))


def _name(stretch: float) -> str:
    return f"stretch_{stretch:g}"


class CosineStretch(Study):
    name = "cosine-stretch"
    description = "cosine schedules planned for 1x-5x the run: the unstretched one is best at equal tokens"
    claim = ("Setting the cosine cycle longer than the training run (so the learning rate never finishes its "
             "decay) gives a worse final loss at the same token count; the best cycle matches the run length "
             "(Hoffmann et al. 2022, App. B, Fig. A1).")

    def runs(self, out: Path, *, smoke: bool) -> dict[str, ExperimentConfig]:
        base = smoke_base() if smoke else full_base()
        return {_name(s): replace(base, schedule=replace(base.schedule, stretch=s)) for s in STRETCHES}

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        from isoflop.train.artifacts import load_config

        rows, loss_series, lr_series, curves = [], [], [], {}
        for s in STRETCHES:
            name = _name(s)
            run = run_dirs[name]
            cfg, plan = load_config(run.path), run.read_plan()
            steps, per_step = plan["steps"], plan["tokens_per_step"]
            evals = run.metrics.eval_records()
            lr = [cfg.optim.lr * cfg.schedule.multiplier(k, steps) for k in range(steps)]
            record = run.read_record()
            rows.append({"stretch": s, "final_lr_fraction": lr[-1] / cfg.optim.lr, "val_loss": record.val_loss,
                         "val_bpb": record.val_bpb, "tokens": record.D_tokens})
            curves[name] = {"tokens": [e["step"] * per_step for e in evals], "val_loss": [e["val_loss"] for e in evals],
                            "lr": lr}
            loss_series.append({"label": f"stretch {s:g}", "x": curves[name]["tokens"], "y": curves[name]["val_loss"],
                                "style": "o-"})
            lr_series.append({"label": f"stretch {s:g}", "x": [(k + 1) * per_step for k in range(steps)], "y": lr,
                              "style": "-"})
        best = min(rows, key=lambda r: r["val_loss"])
        base_loss = rows[0]["val_loss"]
        for r in rows:
            r["delta_vs_1"] = r["val_loss"] - base_loss
        cfg0 = load_config(run_dirs[_name(1.0)].path)
        shape = cfg0.model
        setting = (f"{'SMOKE (seconds-long, not a measurement): ' if smoke else ''}the `tiny` recipe narrowed: d_model "
                   f"{shape.d_model}, {shape.n_layers} layers, {cfg0.data.tokenizer.kind} tokenizer, seq_len "
                   f"{cfg0.data.seq_len}, {rows[0]['tokens']:,} training tokens per run, AdamW peak lr "
                   f"{cfg0.optim.lr:g}, warmup {cfg0.schedule.warmup:g} of the run, cosine to {cfg0.schedule.floor:g}"
                   f" x peak over `stretch` x the post-warmup steps; same seed and data order for every run.")
        worse = [r for r in rows[1:] if r["delta_vs_1"] > 0]
        findings = [f"Lowest final validation loss: stretch {best['stretch']:g} ({best['val_loss']:.4f}); relative "
                    "to stretch 1: " + ", ".join(f"{r['stretch']:g}: {r['delta_vs_1']:+.4f}" for r in rows[1:]) + ".",
                    "Claim " + ("holds here: no stretched cycle beat the unstretched one." if best["stretch"] == 1.0
                                else f"does NOT hold exactly here: stretch {best['stretch']:g} beat stretch 1 by "
                                f"{-best['delta_vs_1']:.4f}; stretched cycles worse than stretch 1: "
                                + (", ".join(f"{r['stretch']:g}" for r in worse) or "none") + "."),
                    "One seed per stretch: rerun with `--set train.seed=N` into another DIR to see the seed-to-seed "
                    "spread before reading differences of about 0.01 nats.",
                    "A stretched cycle ends with a higher learning rate (column `final lr / peak`), so the run "
                    "stops before the end of the annealing phase."]
        return {
            "study": self.name, "title": "Cosine cycle length at a fixed token count", "claim": self.claim,
            "setting": setting, "findings": findings,
            "columns": [{"key": "stretch", "label": "stretch (cycle / run)", "format": "g"},
                        {"key": "final_lr_fraction", "label": "final lr / peak", "format": ".3f"},
                        {"key": "val_loss", "label": "final val loss", "format": ".4f"},
                        {"key": "delta_vs_1", "label": "vs stretch 1", "format": "+.4f"},
                        {"key": "val_bpb", "label": "bits/byte", "format": ".4f"}],
            "rows": rows,
            "plot": {"title": "cosine-stretch: same tokens, longer cosine cycles", "panels": [
                {"title": "validation loss", "xlabel": "training tokens", "ylabel": "val loss (nats/token)",
                 "series": loss_series, "ylim": _zoom([v for c in curves.values() for v in c["val_loss"]])},
                {"title": "learning rate", "xlabel": "training tokens", "ylabel": "lr", "series": lr_series}]},
            "data": {"curves": curves},
        }


def _zoom(values: list[float]) -> tuple[float, float]:
    """A y range that shows the end of training: from the lowest loss to the median (the first evals are far above)."""
    ordered = sorted(values)
    lo, mid = ordered[0], ordered[len(ordered) // 2]
    pad = 0.05 * max(mid - lo, 1e-3)
    return (lo - pad, ordered[-1] + pad) if len(ordered) < 4 else (lo - pad, mid + 4 * pad + (mid - lo))
