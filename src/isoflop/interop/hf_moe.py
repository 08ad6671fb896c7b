"""Hugging Face interop for Mixture-of-Experts models: `MixtralForCausalLM` and `Qwen2MoeForCausalLM`.

Attention, norms, embeddings and dense FFN blocks are Llama's, so their tensor names and checks come from
hf_common.py; this module adds the MoE blocks. The class is the FFN kind's answer (`FFNConfig.hf`,
nn/ffn_config.py), after every other slot said a transformers class holds it (`hf_common.holdable`):

    model.ffn.kind = dense                                             -> LlamaForCausalLM (hf.export_llama)
    moe, every = 1, softmax_topk with renormalize, no shared experts   -> MixtralForCausalLM
    moe, any other softmax_topk (every > 1, shared experts, no renorm) -> Qwen2MoeForCausalLM
    expert_choice, sigmoid_bias, noop experts, capacity_factor, MoD    -> refused: no HF class computes them

Qwen3-MoE is not a target: its attention always RMS-normalises q and k per head, which ours does not, and no
norm weight makes that an identity, so its logits could not equal ours; Qwen2-MoE holds the same MoE layouts.

What Qwen2-MoE always computes, held exactly:
  - it always has a shared expert: without ours it gets width 0 (`shared_expert_intermediate_size = 0`),
    whose output is exactly zero (an empty matmul) whatever its gate;
  - it always scales the shared expert by sigmoid(w . x): without our `shared_gate`, w = 0 (sigmoid(0) = 1/2
    exactly) and the shared down_proj is doubled. Scaling by a power of two is exact in floating point, so
    1/2 * (h @ 2W) is bitwise h @ W. On import, a shared_expert_gate that is all zero in every MoE block reads
    back as shared_gate = False with the down_proj halved (a trained gate is never exactly zero);
  - its attention has q/k/v biases unless `qkv_bias = False`, which export writes.

Tensors are written as Hub checkpoints hold them and as transformers 5's own save_pretrained writes them: one
tensor per expert (`experts.{j}.w1/w2/w3` for Mixtral, `experts.{j}.gate_proj/...` for Qwen2-MoE), which
transformers 5 fuses into its 3-D `experts.gate_up_proj` / `experts.down_proj` on load (its
conversion_mapping.py). Import reads both layouts. Frozen experts (lifelong expansion) are written merged, in
our expert order (frozen first), as HF has no notion of them.

config.json also carries `isoflop_model`, our ModelConfig as a dict, for what no HF key holds (z-loss weight,
frozen experts, train_length, ...); transformers keeps unknown keys as plain attributes. Import restores it only
when it agrees with the HF keys and tensors (else they win), so export -> import gives back the same config.

Shape legend
    E experts (frozen ones first), F frozen experts, H expert hidden width, D d_model
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from isoflop.config import ConfigError
from isoflop.interop.hf import export_llama, import_llama, model_config_from_llama
from isoflop.interop.hf_common import (
    DERIVED_HF_TENSOR,
    DTYPES,
    check_export_args,
    check_tensors,
    complete_tied,
    holdable,
    import_transformers,
    read_config,
    read_safetensors,
    rename,
    rope_parameters,
)
from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import LLAMA, MIXTRAL, QWEN2_MOE, HfFFN, MoEFFN
from isoflop.nn.model import TransformerLM
from isoflop.rundir.atomic import build_dir

_ARCHITECTURES = {"llama": LLAMA, "mixtral": MIXTRAL, "qwen2_moe": QWEN2_MOE}  # config.json's model_type
_STORED_KEY = "isoflop_model"
_PROJS = ("gate_proj", "up_proj", "down_proj")
#: our expert projection -> the per-expert Linear's name in the HF checkpoint
_EXPERT_NAMES = {MIXTRAL: {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"},
                 QWEN2_MOE: {proj: proj for proj in _PROJS}}
#: the MoE block's module name in Hub checkpoints (transformers 5 renames Mixtral's to `mlp` in memory)
_BLOCK_NAMES = {MIXTRAL: "block_sparse_moe", QWEN2_MOE: "mlp"}
#: each class's attention keys beyond Llama's: Mixtral's explicit head_dim and no sliding window; Qwen2-MoE's
#: attention has q/k/v biases and a sliding window unless switched off
_ATTENTION_KEYS: dict[str, Callable[[ModelConfig], dict[str, Any]]] = {
    MIXTRAL: lambda cfg: {"head_dim": cfg.head_dim, "sliding_window": None},
    QWEN2_MOE: lambda cfg: {"qkv_bias": False, "use_sliding_window": False}}
_FFN_TENSOR = re.compile(r"layers\.(\d+)\.ffn\..+")


def hf_architecture(cfg: ModelConfig) -> str:
    """The transformers class that computes exactly what `cfg` does; ConfigError (one line) when none does."""
    return holdable(cfg).architecture


# ----------------------------------------------------------------------------- export


def export_hf(model_cfg: ModelConfig, state_dict: Mapping[str, torch.Tensor], out_dir: str | Path, *,
              max_position_embeddings: int, torch_dtype: str = "float32") -> str:
    """Write `config.json` and `model.safetensors` of the class `hf_architecture` picks; returns its name.

    As hf.export_llama: tensors cast to `torch_dtype`; `out_dir` appears whole or not at all."""
    spec = holdable(model_cfg)
    if spec.architecture == LLAMA:
        export_llama(model_cfg, state_dict, out_dir, max_position_embeddings=max_position_embeddings,
                     torch_dtype=torch_dtype)
        return spec.architecture
    check_export_args(max_position_embeddings=max_position_embeddings, torch_dtype=torch_dtype)
    transformers = import_transformers()
    config_class = transformers.MixtralConfig if spec.architecture == MIXTRAL else transformers.Qwen2MoeConfig
    rope = rope_parameters(model_cfg, max_position_embeddings=max_position_embeddings)
    hf_config = config_class(**_config_kwargs(model_cfg, spec, max_position_embeddings=max_position_embeddings),
                             rope_parameters=rope, dtype=torch_dtype, **{_STORED_KEY: model_cfg.to_dict()})
    ours = complete_tied(model_cfg, dict(state_dict), where="state_dict")
    check_tensors(model_cfg, ours, where="state_dict")
    dtype = DTYPES[torch_dtype]
    tensors = _to_hf_tensors(model_cfg, spec, {name: t.detach().to("cpu", dtype) for name, t in ours.items()})

    def write(tmp: Path) -> None:
        hf_config.save_pretrained(tmp)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})

    build_dir(out_dir, write)
    return spec.architecture


def _config_kwargs(cfg: ModelConfig, spec: HfFFN, *, max_position_embeddings: int) -> dict[str, Any]:
    """The HF config keys of `cfg` (MixtralConfig's or Qwen2MoeConfig's) but rope_parameters."""
    return dict(
        architectures=[spec.architecture], vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        hidden_act="silu", max_position_embeddings=max_position_embeddings, initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,  # the tokenizer export owns the ids
    ) | _ATTENTION_KEYS[spec.architecture](cfg) | spec.config


def _to_hf_tensors(cfg: ModelConfig, spec: HfFFN, ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    sparse = [i for i in range(cfg.n_layers) if cfg.ffn.is_sparse(i)]
    for name, t in ours.items():
        match = _FFN_TENSOR.fullmatch(name)
        if (cfg.tie_embeddings and name == "lm_head.weight") or (match and int(match[1]) in sparse):
            continue
        hf_name = rename(name, to_hf=True)
        if hf_name is None:
            raise ValueError(f"state_dict: tensor {name!r} has no {spec.architecture} name")
        out[hf_name] = t.contiguous()
    for i in sparse:
        out.update(_moe_block_to_hf(spec, i, ours))
    return out


def _moe_block_to_hf(spec: HfFFN, i: int, ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    arch = spec.architecture
    p, block = f"layers.{i}.ffn.", f"model.layers.{i}.{_BLOCK_NAMES[arch]}."

    def merged(trainable: str, frozen: str) -> torch.Tensor:  # frozen experts first: our expert order
        return torch.cat([ours[p + frozen], ours[p + trainable]]) if spec.frozen_experts else ours[p + trainable]

    out = {block + "gate.weight": merged("gate.weight", "gate_frozen").contiguous()}  # router (E, D)
    for proj in _PROJS:
        w_EXX = merged(f"experts.{proj}", f"experts_frozen.{proj}")
        for j in range(spec.experts):  # clones: safetensors refuses tensors sharing storage
            out[block + f"experts.{j}.{_EXPERT_NAMES[arch][proj]}.weight"] = w_EXX[j].clone()
    if arch == MIXTRAL:
        return out
    router_ED = out[block + "gate.weight"]
    d_model = router_ED.shape[1]
    if spec.shared_experts:
        shared = {proj: ours[p + f"shared.{proj}.weight"].contiguous() for proj in _PROJS}
    else:  # width 0: an exactly zero output
        shared = {"gate_proj": router_ED.new_zeros(0, d_model), "up_proj": router_ED.new_zeros(0, d_model),
                  "down_proj": router_ED.new_zeros(d_model, 0)}
    if spec.shared_gate:
        gate_1D = ours[p + "shared_gate.weight"].contiguous()
    else:  # sigmoid(0) = 1/2 exactly, undone by a doubled down_proj (exact: a power of two)
        gate_1D = router_ED.new_zeros(1, d_model)
        shared["down_proj"] = shared["down_proj"] * 2
    out.update({block + f"shared_expert.{proj}.weight": w for proj, w in shared.items()})
    out[block + "shared_expert_gate.weight"] = gate_1D
    return out


# ----------------------------------------------------------------------------- import


def import_hf(hf_dir: str | Path) -> tuple[ModelConfig, TransformerLM]:
    """Our config and model (float32) from a Llama, Mixtral or Qwen2-MoE checkpoint directory (by model_type).

    Refuses with a ValueError what our model cannot compute exactly as transformers does (see
    `model_config_from_moe` and hf.import_llama)."""
    hf_dir = Path(hf_dir)
    hf = read_config(hf_dir)
    arch = _ARCHITECTURES.get(str(hf.get("model_type")))
    if arch is None:
        raise ValueError(f"{hf_dir / 'config.json'}: model_type {hf.get('model_type')!r} is not one of "
                         f"{', '.join(_ARCHITECTURES)}")
    if arch == LLAMA:
        return import_llama(hf_dir)
    where = str(hf_dir / "config.json")
    cfg = model_config_from_moe(hf, where=where)
    spec = holdable(cfg)
    tensors = {n: t for n, t in read_safetensors(hf_dir).items() if not DERIVED_HF_TENSOR.fullmatch(n)}
    blocks = {i: _pop_moe_block(tensors, spec, i, where=str(hf_dir))
              for i in range(cfg.n_layers) if cfg.ffn.is_sparse(i)}
    if spec.shared_experts and blocks and all(not b["shared_gate"].any() for b in blocks.values()):
        # an all-zero gate is the constant 1/2 that export writes for an ungated shared expert (module docstring)
        cfg = model_config_from_moe(hf, where=where, gated=False)
        for b in blocks.values():
            b["shared.down_proj"] = b["shared.down_proj"] / 2
    cfg = _restore_stored(hf, cfg, arch)
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        our_name = rename(name, to_hf=False)
        if our_name is None:
            raise ValueError(f"{hf_dir}: tensor {name!r} is not part of a {arch} model")
        ours[our_name] = tensor
    spec = holdable(cfg)
    for i, block in blocks.items():
        ours.update(_moe_block_from_hf(spec, i, block))
    ours = complete_tied(cfg, ours, where=str(hf_dir))
    check_tensors(cfg, ours, where=str(hf_dir))
    model = cfg.build()
    model.load_state_dict(ours, strict=True)
    return cfg, model


def model_config_from_moe(hf: Mapping[str, Any], *, where: str = "config.json", gated: bool = True) -> ModelConfig:
    """Our ModelConfig for a MixtralConfig or Qwen2MoeConfig dict (a Qwen2-MoE shared expert reads as gated
    unless `gated` is False: import_hf ungates it when its gate weights are all zero)."""

    def refuse(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}")

    arch = _ARCHITECTURES.get(str(hf.get("model_type")))
    if arch not in (MIXTRAL, QWEN2_MOE):
        raise refuse(f"model_type {hf.get('model_type')!r} is not 'mixtral' or 'qwen2_moe'")
    # The attention half is a Llama config; the defaults are those of MixtralConfig / Qwen2MoeConfig.
    llama = {"rope_theta": 1e6 if arch == MIXTRAL else 1e4, "rms_norm_eps": 1e-5 if arch == MIXTRAL else 1e-6,
             "max_position_embeddings": 131072 if arch == MIXTRAL else 32768,
             **hf, "model_type": "llama", "attention_bias": False, "mlp_bias": False}
    if arch == MIXTRAL:
        required = ("num_local_experts", "num_experts_per_tok")
        if hf.get("sliding_window") is not None:
            raise refuse(f"sliding_window {hf['sliding_window']} is set; our attention sees the whole prefix")
    else:
        required = ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size")
        if hf.get("qkv_bias", True):  # Qwen2MoeConfig's default is True
            raise refuse("qkv_bias is true; our attention projections have no biases")
        if hf.get("use_sliding_window", False):
            raise refuse("use_sliding_window is true; our attention sees the whole prefix")
        if hf.get("mlp_only_layers"):
            raise refuse(f"mlp_only_layers {hf['mlp_only_layers']} is not empty; our MoE blocks follow "
                         "decoder_sparse_step alone")
    missing = [k for k in required if k not in hf]
    if missing:
        raise refuse(f"lacks {', '.join(missing)}")
    try:
        ffn = MoEFFN.from_hf(hf, arch, gated=gated)
    except ConfigError as e:
        raise refuse(f"gives model.ffn.{e}") from None
    if arch == QWEN2_MOE and hf["shared_expert_intermediate_size"] % hf["moe_intermediate_size"]:
        raise refuse(f"shared_expert_intermediate_size {hf['shared_expert_intermediate_size']} is not a multiple "
                     f"of moe_intermediate_size {hf['moe_intermediate_size']} (our shared experts are whole experts)")
    return dataclasses.replace(model_config_from_llama(llama, where=where), ffn=ffn)


def _pop_moe_block(tensors: dict[str, torch.Tensor], spec: HfFFN, i: int, *, where: str) -> dict[str, torch.Tensor]:
    """Remove block i's MoE tensors from `tensors`: router (E, D), experts (E, H, D) / (E, D, H), shared ones."""
    arch = spec.architecture

    def pop(name: str) -> torch.Tensor:
        if name not in tensors:
            raise ValueError(f"{where}: lacks tensor {name!r}")
        return tensors.pop(name)

    block = f"model.layers.{i}.{_BLOCK_NAMES[arch]}."
    if block + "gate.weight" not in tensors:  # a state_dict saved from transformers 5's in-memory Mixtral
        block = f"model.layers.{i}.mlp."
    out = {"router": pop(block + "gate.weight")}
    if block + "experts.gate_up_proj" in tensors:  # transformers 5's fused layout: all gate rows, then up rows
        out["gate_proj"], out["up_proj"] = pop(block + "experts.gate_up_proj").chunk(2, dim=1)
        out["down_proj"] = pop(block + "experts.down_proj")
    else:
        for proj in _PROJS:
            name = _EXPERT_NAMES[arch][proj]
            out[proj] = torch.stack([pop(block + f"experts.{j}.{name}.weight") for j in range(spec.experts)])
    if arch == QWEN2_MOE:
        for proj in _PROJS:
            out[f"shared.{proj}"] = pop(block + f"shared_expert.{proj}.weight")
            if spec.shared_experts == 0 and out[f"shared.{proj}"].numel():
                raise ValueError(f"{where}: {block}shared_expert.{proj}.weight is not empty, though "
                                 "shared_expert_intermediate_size is 0")
        out["shared_gate"] = pop(block + "shared_expert_gate.weight")
    return out


def _moe_block_from_hf(spec: HfFFN, i: int, block: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensor names of block i (frozen experts split off the front)."""
    n_frozen, p = spec.frozen_experts, f"layers.{i}.ffn."
    out = {p + "gate.weight": block["router"][n_frozen:]}
    for proj in _PROJS:
        out[p + f"experts.{proj}"] = block[proj][n_frozen:]
    if n_frozen:
        out[p + "gate_frozen"] = block["router"][:n_frozen]
        out.update({p + f"experts_frozen.{proj}": block[proj][:n_frozen] for proj in _PROJS})
    if spec.shared_experts:
        out.update({p + f"shared.{proj}.weight": block[f"shared.{proj}"] for proj in _PROJS})
    if spec.shared_gate:
        out[p + "shared_gate.weight"] = block["shared_gate"]
    return out


def _restore_stored(hf: Mapping[str, Any], cfg: ModelConfig, arch: str) -> ModelConfig:
    """The ModelConfig export stored in config.json, where it computes what the HF keys and tensors say."""
    stored = hf.get(_STORED_KEY)
    if not isinstance(stored, dict):
        return cfg
    try:
        candidate = ModelConfig.from_dict(stored)
        if hf_architecture(candidate) != arch:
            return cfg
    except (ConfigError, ValueError):  # edited by hand, or from another isoflop version: the HF keys win
        return cfg
    return candidate if _function_view(candidate) == _function_view(cfg) else cfg


def _function_view(cfg: ModelConfig) -> dict[str, Any]:
    """What decides the function (the HF keys export writes, the RoPE config and the shared gate, which only
    exists in MoE blocks)."""
    spec = holdable(cfg)
    has_moe = any(cfg.ffn.is_sparse(i) for i in range(cfg.n_layers))
    return _config_kwargs(cfg, spec, max_position_embeddings=0) | {"rope": cfg.rope,
                                                                   "shared_gate": has_moe and spec.shared_gate}


__all__ = ["LLAMA", "MIXTRAL", "QWEN2_MOE", "export_hf", "hf_architecture", "import_hf", "model_config_from_moe"]
