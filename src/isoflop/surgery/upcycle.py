"""Sparse upcycling (Komatsuzaki et al. 2023, arXiv 2212.05055): a dense run becomes an MoE run.

Every `every`-th MLP becomes an MoE layer whose experts are all copies of it; everything else (attention,
norms, embeddings, the untouched MLPs) is copied bit for bit; routers are new, drawn from a logged seed.
The output is a run directory with its config, plan, tokenizer and one checkpoint, so
`isoflop train DIR --resume` trains it on.

Optimizer state: the paper reuses it for vision only. By default the upcycled run starts a fresh optimizer at
step 0 (with its own warm-up) and `--steps` more steps; with `reuse_optimizer` each expert's moments are
copies of its MLP's, the routers' moments start at zero, and the step count and schedule continue from the
dense run's step over a horizon of dense steps + `steps`. In both cases the data loader continues where the
dense run stopped, so the upcycled model sees new batches.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from isoflop.config import ConfigError
from isoflop.nn.ffn_config import MoEFFN, RouterConfig
from isoflop.rundir import RunDir
from isoflop.rundir.atomic import check_empty_or_absent
from isoflop.surgery.run_io import read_run, write_run
from isoflop.train import parallel
from isoflop.train.spec import HorizonConfig

EXPERT_TENSORS = ("gate_proj", "up_proj", "down_proj")


def upcycle(run_dir: str | Path, out_dir: str | Path, *, experts: int, top_k: int, every: int = 2,
            router: RouterConfig | None = None, noise: float = 0.0, reuse_optimizer: bool = False,
            steps: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the upcycled run into `out_dir`; returns the record it saves there (RunDir.surgery_file)."""
    src, out = Path(run_dir), Path(out_dir)
    dense_cfg, dense_state, dense_optim, state = read_run(src, with_optimizer=reuse_optimizer)
    if dense_cfg.model.ffn.kind != "dense":
        raise ConfigError(str(src), f"has model.ffn.kind={dense_cfg.model.ffn.kind!r}; upcycling needs a dense run")
    check_empty_or_absent(out)
    if noise < 0:
        raise ConfigError("--noise", f"must be >= 0, got {noise}")
    dense_step = state["step"]
    extra = steps if steps is not None else dense_step
    if extra < 1:
        raise ConfigError("--steps", f"must be at least 1, got {extra}")

    ffn = MoEFFN(experts=experts, top_k=top_k, every=every, router=router or MoEFFN().router)
    horizon = HorizonConfig(steps=dense_step + extra if reuse_optimizer else extra)
    cfg = replace(dense_cfg, model=replace(dense_cfg.model, ffn=ffn),
                  train=replace(dense_cfg.train, horizon=horizon))

    torch.manual_seed(seed)  # the routers' initialisation: the only new weights
    model = cfg.resolved_model.build()
    new_state, converted = map_weights(model.state_dict(), dense_state, noise=noise, seed=seed)
    model.load_state_dict(new_state, strict=True)
    optim_state = None
    if reuse_optimizer:
        optimizer = cfg.optim.build(model)
        optim_state = map_optimizer(parallel.full_state(model, optimizer)[1], dense_optim, model)

    start = dense_step if reuse_optimizer else 0
    record = {"source": str(src.resolve()), "source_step": dense_step, "start_step": start,
              "experts": experts, "top_k": top_k, "every": every, "router": ffn.router.to_dict(),
              "noise": noise, "router_seed": seed, "reuse_optimizer": reuse_optimizer,
              "converted_layers": converted, "steps_to_train": extra}
    write_run(out, cfg, tokenizer_dir=RunDir(src).tokenizer_dir, step=start, model_state=model.state_dict(),
              optim_state=optim_state, loader_state=state["loader"], surgery="upcycle", record=record)
    return record


def map_weights(new_state: dict[str, torch.Tensor], dense_state: dict[str, torch.Tensor], *,
                noise: float = 0.0, seed: int = 0) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The upcycled state dict: dense tensors copied where the names match; each MoE layer's experts stacked
    from its MLP (plus N(0, noise^2) per expert when noise > 0); routers keep their fresh values."""
    out, used, converted = {}, set(), set()
    generator = torch.Generator().manual_seed(seed + 1)
    for name, fresh in new_state.items():
        if name in dense_state:
            if dense_state[name].shape != fresh.shape:
                raise ConfigError(name, f"shape {tuple(fresh.shape)} in the MoE model, "
                                        f"{tuple(dense_state[name].shape)} in the dense run")
            out[name], _ = dense_state[name].clone(), used.add(name)
            continue
        prefix, _, tensor = name.rpartition(".experts.")
        if tensor in EXPERT_TENSORS:
            source = f"{prefix}.{tensor}.weight"
            mlp = dense_state[source]  # (h, D) or (D, h): the nn.Linear layout each expert slice uses
            stacked = mlp.unsqueeze(0).expand(fresh.shape[0], *mlp.shape).clone()
            if noise > 0:
                stacked += noise * torch.randn(stacked.shape, generator=generator, dtype=stacked.dtype)
            out[name], _ = stacked, used.add(source)
            converted.add(int(name.split(".")[1]))
            continue
        out[name] = fresh  # router, shared experts: new
    unused = sorted(set(dense_state) - used)
    if unused:
        raise ConfigError(unused[0], "a dense tensor has no place in the MoE model")
    return out, sorted(converted)


def map_optimizer(template: dict[str, Any], dense: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The upcycled optimizer state (keyed by parameter name, as parallel.full_state gives it): dense moments
    copied, each expert's moments stacked from its MLP's, routers' moments zero at the dense step count."""
    dense_states = dense["state"]
    step = next(iter(dense_states.values())).get("step") if dense_states else None
    states = {}
    for name, param in model.named_parameters():
        if name in dense_states:
            states[name] = {k: v.clone() if torch.is_tensor(v) else v for k, v in dense_states[name].items()}
            continue
        prefix, _, tensor = name.rpartition(".experts.")
        source = f"{prefix}.{tensor}.weight"
        if tensor in EXPERT_TENSORS and source in dense_states:
            states[name] = {k: _stack_like(v, param) for k, v in dense_states[source].items()}
        else:
            example = next(iter(dense_states.values()))
            states[name] = {k: (v.clone() if k == "step" else torch.zeros_like(param))
                            for k, v in example.items()} if step is not None else {}
    return {"state": states, "param_groups": template["param_groups"]}


def _stack_like(value: Any, param: torch.Tensor) -> Any:
    """An MLP moment broadcast to every expert of `param` (E, ...); scalars (the step count) copied."""
    if torch.is_tensor(value) and value.dim() > 0:
        return value.unsqueeze(0).expand(param.shape[0], *value.shape).clone()
    return value.clone() if torch.is_tensor(value) else value
