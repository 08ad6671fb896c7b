"""A synthetic sweep folder: a plan and one run directory per planned run, every file written through the
owners' writers (SweepDir, RunDir, MetricsLog), with losses drawn from a known Chinchilla law.

Shapes follow a fixed aspect ratio (n_layer = d/64, so N_non_embedding = 12·n_layer·d² = 0.1875·d³) with a
tied embedding of V·d, and the counted FLOPs per token are 6·N_non_embedding + 6·V·d (the head) + 6·n_layer·T·d
(attention), so embeddings and attention make the three parameter conventions differ as they do in real runs.
The final loss is L(N_total, D)·exp(σ·z) (z standard normal, seeded) plus c·ln²(m/m*) for a learning-rate
multiplier m away from the cell's best m*; the training curve is the law along the run's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from isoflop.rundir import EVAL, TRAIN, RunDir, RunRecord
from isoflop.science.laws import ChinchillaLaw
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.plan import PlannedRun, SweepPlan
from isoflop.train.spec import ExperimentConfig

LAW = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
"""Hoffmann et al. 2022's rounded constants: a = β/(α+β) = 0.4516."""
VOCAB, SEQ = 4096, 256
BUDGETS = (1e16, 1e17, 1e18)
FACTORS = (1 / 4, 1 / 2, 1.0, 2.0, 4.0)
"""Sizes per budget: these multiples of the law's 6ND optimum (a parabola needs 3 on both sides of it)."""


def shape(n_total: float) -> dict[str, float]:
    """d, N_non_embedding, N_embedding and counted FLOPs per token for a total of about `n_total` parameters."""
    roots = np.roots([0.1875, 0.0, VOCAB, -n_total])
    d = float(max(r.real for r in roots if abs(r.imag) < 1e-9))
    n_ne, n_emb = 0.1875 * d**3, VOCAB * d
    return {"d": d, "N_non_embedding": round(n_ne), "N_embedding": round(n_emb), "N_total": round(n_ne) + round(n_emb),
            "flops_per_token": round(6 * n_ne + 6 * n_emb + 6 * (d / 64) * SEQ * d)}


def make_sweep(path: str | Path, *, law: ChinchillaLaw = LAW, budgets=BUDGETS, factors=FACTORS, noise: float = 0.002,
               seed: int = 0, lr_multipliers=(1.0,), lr_best: Callable[[float, float], float] = lambda C, f: 1.0,
               lr_penalty: float = 0.05, curve_points: int = 24, train: bool = True) -> SweepDir:
    """Plan and (with `train`) write the runs of a synthetic grid sweep; returns its SweepDir.

    `lr_best(budget, factor)` is the multiplier with the lowest loss in a cell (the grid's edges can be missed).
    """
    rng = np.random.default_rng(seed)
    sweep = SweepDir(path)
    runs, losses = [], {}
    for C in budgets:
        n_opt = law.optimal(C)[0]
        for f in factors:
            s = shape(n_opt * f)
            tokens = int(C / s["flops_per_token"])
            z = rng.normal()
            for m in lr_multipliers:
                config = ExperimentConfig.from_dict({"model": {"d_model": 64 * max(1, round(s["d"] / 64))},
                                                     "optim": {"lr": 3e-3 * m},
                                                     "train": {"horizon": {"steps": max(1, tokens // 4096)}}})
                key = f"C{C:.0e}-N{s['N_total']:.3g}-lr{m:g}x"
                runs.append(PlannedRun(
                    key=key, role="grid", budget=C, target_params=n_opt * f,
                    shape={"d_model": s["d"]}, params={"total": s["N_total"], "embedding": s["N_embedding"],
                                                       "non_embedding": s["N_non_embedding"]},
                    steps=max(1, tokens // 4096), tokens=tokens, flops_per_token=s["flops_per_token"],
                    flops=float(tokens * s["flops_per_token"]), flops_6nd=6.0 * s["N_total"] * tokens,
                    bill_flops=float(tokens * s["flops_per_token"]), lr=3e-3 * m, batch_size=16, lr_multiplier=m,
                    config=config.to_dict()))
                penalty = lr_penalty * np.log(m / lr_best(C, f)) ** 2
                losses[key] = (s, tokens, z, penalty)
    plan = SweepPlan(mode="grid", budgets=list(budgets), runs=runs, bills={"grid": 0.0, "fork": 0.0}, spec={})
    sweep.write_plan(plan)
    if train:
        for run in runs:
            s, tokens, z, penalty = losses[run.key]
            write_run(sweep.run_dir(run.key), run, law, s, tokens, noise * z, penalty, curve_points)
    return sweep


def write_run(run: RunDir, planned: PlannedRun, law: ChinchillaLaw, s: dict, tokens: int, log_noise: float,
              penalty: float, curve_points: int, *, complete: bool = True) -> None:
    run.write_config(planned.config)
    steps = np.linspace(tokens / curve_points, tokens, curve_points)
    for i, t in enumerate(steps, start=1):
        loss = float(law.loss(s["N_total"], t) * np.exp(log_noise) + penalty)
        run.metrics.append(TRAIN, {"step": i, "loss": loss, "tokens": float(t),
                                   "flops": float(t * s["flops_per_token"]), "elapsed_s": 0.1 * i})
    final = float(law.loss(s["N_total"], tokens) * np.exp(log_noise) + penalty)
    run.metrics.append(EVAL, {"step": curve_points, "val_loss": final})
    if complete:
        run.write_record(record(s, tokens, final))


def record(s: dict, tokens: int, loss: float) -> RunRecord:
    return RunRecord(N_total=s["N_total"], N_active=s["N_total"], N_non_embedding=s["N_non_embedding"],
                     N_embedding=s["N_embedding"], D_tokens=tokens, D_bytes=4 * tokens,
                     flops=float(tokens * s["flops_per_token"]), flops_per_token=s["flops_per_token"],
                     steps=max(1, tokens // 4096), seq_len=SEQ, val_loss=loss, val_bpb=loss / np.log(2) / 4,
                     wall_time_s=1.0, training_time_s=1.0, world_size=1, device="cpu", tokenizer="bpe",
                     vocab_size=VOCAB, torch="synthetic")
