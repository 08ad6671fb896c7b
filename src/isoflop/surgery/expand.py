"""Lifelong expert expansion (Lifelong-MoE, Chen et al. 2023, arXiv 2305.12281): when the data changes, give
every MoE layer new experts and new router rows, optionally freeze the old ones, and regularise the new phase
by distillation against the previous model.

Function preservation. A top-k router cannot give new experts a gate of exactly zero and still let them learn:
an expert that is never selected gets no gradient. isoflop uses a *selection* bias (a buffer, never a gate):
new experts start with a bias ENTRY_MARGIN below the layer's lowest old bias (and below 0), so probabilities
(softmax or sigmoid, both in (0, 1)) plus bias never beat an old expert and the outputs on any input are
unchanged before training; the new router rows start at zero. One limit: the new rows take a share of each
token's softmax, scaling every old probability by the same factor, which keeps the order of old experts whose
biases are equal (a first expansion) but can swap experts whose biases differ (expanding a softmax run whose
biases have moved, e.g. a second expansion): there `isoflop expand` says so. Sigmoid scores are per expert, so
a sigmoid_bias run is preserved exactly however its biases have moved.
After each optimizer step the bias moves by `entry_rate` toward balance (DeepSeek's aux-loss-free rule), so the
new experts, which carry no load, rise until tokens of the new data choose them. Frozen experts' biases and
router rows never move. Gates stay renormalised over the selected experts (softmax_topk needs renormalize=True;
un-renormalised softmax gates would change with the new experts' share of the softmax).

The new phase starts at step 0 with a fresh optimizer on the new data (`--set data.corpus=...`); the source
run's tokenizer is reused, and its corpus's validation loss is logged as `val_loss@<name>` (eval.also).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from isoflop.config import ConfigError, apply_overrides
from isoflop.nn.ffn_config import MoEFFN
from isoflop.rundir import RunDir
from isoflop.rundir.atomic import check_empty_or_absent
from isoflop.surgery.run_io import read_run, write_run
from isoflop.train.spec import DistillConfig, ExperimentConfig, HorizonConfig

ENTRY_MARGIN = 1.0  # probabilities lie in (0, 1): a bias this far below every old one is never chosen
EXPERT_TENSORS = ("gate_proj", "up_proj", "down_proj")


def expand(run_dir: str | Path, out_dir: str | Path, *, new_experts: int, freeze_old: bool = False,
           distill: float = 0.0, entry_rate: float = 1e-2, steps: int | None = None, seed: int = 0,
           overrides: list[str] | None = None) -> dict[str, Any]:
    """Write the expanded run into `out_dir`; returns the record it saves there (RunDir.surgery_file)."""
    src, out = Path(run_dir).resolve(), Path(out_dir)
    old_cfg, old_state, _, state = read_run(src)
    old = _check_source(old_cfg, src)
    check_empty_or_absent(out)
    if new_experts < 1:
        raise ConfigError("--new-experts", f"must be at least 1, got {new_experts}")
    if distill < 0:
        raise ConfigError("--distill", f"must be >= 0, got {distill}")
    if entry_rate <= 0:
        raise ConfigError("--entry-rate", f"must be positive, got {entry_rate}")
    extra = steps if steps is not None else state["step"]
    if extra < 1:
        raise ConfigError("--steps", f"must be at least 1, got {extra}")

    cfg = _expanded_config(old_cfg, old, src, new_experts=new_experts, freeze_old=freeze_old, distill=distill,
                           entry_rate=entry_rate, steps=extra, overrides=overrides or [])
    torch.manual_seed(seed)  # the new experts' initialisation
    model = cfg.resolved_model.build()
    new_state = map_weights(model.state_dict(), old_state, n_old=old.experts, n_new=new_experts,
                            frozen=cfg.model.ffn.frozen_experts)
    model.load_state_dict(new_state, strict=True)
    record = {"source": str(src), "source_step": state["step"], "old_experts": old.experts,
              "new_experts": new_experts, "frozen_experts": cfg.model.ffn.frozen_experts, "distill": distill,
              "entry_bias": {}, "entry_rate": entry_rate, "seed": seed, "steps_to_train": extra,
              "old_data": old_cfg.data.corpus, "new_data": cfg.data.corpus, "softmax_order_may_change": False}
    for name, bias_E in new_state.items():
        if name.endswith("ffn.selection_bias"):
            layer, old_bias = name.removesuffix(".ffn.selection_bias"), bias_E[:-new_experts]
            record["entry_bias"][layer] = float(bias_E[-1])
            if old.router.shares_scores and _close_unequal(old_bias):
                record["softmax_order_may_change"] = True  # see the module docstring
    write_run(out, cfg, tokenizer_dir=RunDir(src).tokenizer_dir, step=0, model_state=model.state_dict(),
              optim_state=None, loader_state={"next_batch": 0}, surgery="expand", record=record)
    return record


def _check_source(cfg: ExperimentConfig, src: Path) -> MoEFFN:
    ffn = cfg.model.ffn
    if not isinstance(ffn, MoEFFN):
        raise ConfigError(str(src), f"has model.ffn.kind={ffn.kind!r}; expansion needs an MoE run "
                                    "(`isoflop upcycle` makes one from a dense run)")
    try:
        ffn.router.entering(1.0)
    except ConfigError as e:
        raise ConfigError(str(src), f"model.ffn.router.{e.key}: {e.problem}") from None
    if ffn.noop_experts:
        raise ConfigError(str(src), "has no-op experts; expansion does not support them")
    return ffn


def _expanded_config(old_cfg: ExperimentConfig, old: MoEFFN, src: Path, *, new_experts: int, freeze_old: bool,
                     distill: float, entry_rate: float, steps: int, overrides: list[str]) -> ExperimentConfig:
    router = old.router.entering(entry_rate)
    frozen = old.experts if freeze_old else old.frozen_experts
    ffn = replace(old, experts=old.experts + new_experts, frozen_experts=frozen, router=router)
    tokenizer = replace(old_cfg.data.tokenizer, path=str(RunDir(src).tokenizer_dir))
    cfg = replace(old_cfg, model=replace(old_cfg.model, ffn=ffn),
                  data=replace(old_cfg.data, tokenizer=tokenizer),
                  train=replace(old_cfg.train, horizon=HorizonConfig(steps=steps)),
                  distill=DistillConfig(teacher=str(src), weight=distill) if distill > 0 else DistillConfig())
    data = apply_overrides(cfg.to_dict(), overrides, ExperimentConfig)  # e.g. data.corpus=NEW
    cfg = ExperimentConfig.from_dict(data)
    if cfg.data.corpus != old_cfg.data.corpus and old_cfg.data.corpus not in cfg.eval.also:
        cfg = replace(cfg, eval=replace(cfg.eval, also=[*cfg.eval.also, old_cfg.data.corpus]))
    return cfg


def map_weights(new_state: dict[str, torch.Tensor], old_state: dict[str, torch.Tensor], *, n_old: int,
                n_new: int, frozen: int) -> dict[str, torch.Tensor]:
    """The expanded state dict: every old tensor copied; in each MoE layer the old experts and router rows
    (frozen ones first) followed by the new experts (their fresh initialisation) and zero router rows; the
    selection bias is the old one (or zero) followed by, for each new expert, the lowest of 0 and the old biases
    less ENTRY_MARGIN."""
    out = dict(new_state)
    layers = sorted({name.split(".ffn.")[0] for name in new_state if ".ffn.experts." in name})
    for layer in layers:
        ffn = f"{layer}.ffn."
        old_router = _full(old_state, ffn, "gate.weight", "gate_frozen")
        router = torch.cat([old_router, old_router.new_zeros(n_new, old_router.shape[1])])
        _split_into(out, router, ffn + "gate_frozen", ffn + "gate.weight", frozen)
        for tensor in EXPERT_TENSORS:
            old_w = _full(old_state, ffn, f"experts.{tensor}", f"experts_frozen.{tensor}")
            fresh = new_state[ffn + f"experts.{tensor}"][-n_new:]
            _split_into(out, torch.cat([old_w, fresh]), ffn + f"experts_frozen.{tensor}", ffn + f"experts.{tensor}",
                        frozen)
        old_bias = old_state.get(ffn + "selection_bias", torch.zeros(n_old))
        entry = min(float(old_bias.min()), 0.0) - ENTRY_MARGIN
        out[ffn + "selection_bias"] = torch.cat([old_bias, torch.full((n_new,), entry, dtype=old_bias.dtype)])
    for name, tensor in old_state.items():  # attention, norms, embeddings, dense MLPs, shared experts
        if ".ffn.experts" in name or name.endswith(("ffn.gate.weight", "ffn.gate_frozen", "ffn.selection_bias")):
            continue
        if name not in out or out[name].shape != tensor.shape:
            raise ConfigError(name, "an old tensor has no place in the expanded model")
        out[name] = tensor.clone()
    return out


def _close_unequal(bias_E: torch.Tensor) -> bool:
    """Whether two biases differ by less than ENTRY_MARGIN: the only pairs of old experts whose order a common
    scaling of their softmax probabilities (in (0, 1)) can swap."""
    gaps = torch.diff(torch.unique(bias_E))  # sorted distinct values: the smallest gaps are between neighbours
    return bool((gaps < ENTRY_MARGIN).any())


def _full(state: dict[str, torch.Tensor], prefix: str, trainable: str, frozen: str) -> torch.Tensor:
    """All experts' rows of a tensor: the frozen part (if any) then the trainable part."""
    parts = [state[prefix + frozen]] if prefix + frozen in state else []
    return torch.cat([*parts, state[prefix + trainable]])


def _split_into(out: dict[str, torch.Tensor], full: torch.Tensor, frozen_name: str, trainable_name: str,
                frozen: int) -> None:
    if frozen:
        out[frozen_name] = full[:frozen].clone()
    out[trainable_name] = full[frozen:].clone()
