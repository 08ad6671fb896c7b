"""Hugging Face interop for dense models: export to / import from a `LlamaForCausalLM` checkpoint directory.

A checkpoint directory is `config.json` (a LlamaConfig) plus `model.safetensors` (or shards listed by
`model.safetensors.index.json`). Our dense model is Llama's architecture exactly (pre-norm RMSNorm in float32,
rotate-half RoPE, SwiGLU, no biases), so the conversion is a renaming of tensors and of config keys; nothing is
permuted. What Llama cannot hold is refused by the variant concerned (interop/hf_common.py, `holdable`).

Export needs transformers (`pip install 'isoflop[hf]'`); import needs only safetensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from isoflop.config import ConfigError
from isoflop.interop.hf_common import (
    DERIVED_HF_TENSOR,
    DTYPES,
    LLAMA_NAMES,
    check_export_args,
    check_tensors,
    complete_tied,
    holdable,
    import_transformers,
    read_config,
    read_safetensors,
    rename,
    rope_from_hf,
    rope_parameters,
)
from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import LLAMA, DenseFFN
from isoflop.nn.model import TransformerLM
from isoflop.rundir.atomic import build_dir

# ----------------------------------------------------------------------------- export


def export_llama(model_cfg: ModelConfig, state_dict: Mapping[str, torch.Tensor], out_dir: str | Path, *,
                 max_position_embeddings: int, torch_dtype: str = "float32") -> None:
    """Write `config.json` and `model.safetensors` that `LlamaForCausalLM.from_pretrained(out_dir)` loads.

    `state_dict` is our model's (tied models may hold `lm_head.weight`, `embed.weight` or both); tensors are
    cast to `torch_dtype`. `out_dir` must not exist or be empty; it appears whole or not at all.
    """
    if holdable(model_cfg).architecture != LLAMA:
        raise ConfigError("model.ffn.kind", f"a Llama checkpoint holds only {DenseFFN.kind!r} FFNs, "
                                            f"got {model_cfg.ffn.kind!r}")
    check_export_args(max_position_embeddings=max_position_embeddings, torch_dtype=torch_dtype)
    hf_config = _llama_config(model_cfg, max_position_embeddings=max_position_embeddings, torch_dtype=torch_dtype)
    ours = complete_tied(model_cfg, dict(state_dict), where="state_dict")
    check_tensors(model_cfg, ours, where="state_dict")
    dtype = DTYPES[torch_dtype]
    tensors: dict[str, torch.Tensor] = {}
    for name, t in ours.items():
        hf_name = rename(name, to_hf=True)
        if hf_name is None:  # not reached for a config holdable() accepts: its tensors are all Llama's
            raise ValueError(f"state_dict: tensor {name!r} has no Llama name")
        if not (model_cfg.tie_embeddings and name == "lm_head.weight"):
            tensors[hf_name] = t.detach().to("cpu", dtype).contiguous()

    def write(tmp: Path) -> None:
        hf_config.save_pretrained(tmp)
        # "format": "pt" is the metadata transformers checks to know the file holds PyTorch-layout tensors.
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})

    build_dir(out_dir, write)


def _llama_config(cfg: ModelConfig, *, max_position_embeddings: int, torch_dtype: str) -> Any:
    """transformers' own LlamaConfig, so its save_pretrained writes exactly the keys its loader expects."""
    transformers = import_transformers()
    return transformers.LlamaConfig(
        architectures=[LLAMA],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope_parameters(cfg, max_position_embeddings=max_position_embeddings),
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        # The model is tokenizer-agnostic; the tokenizer export owns these ids.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        dtype=torch_dtype,
    )


# ----------------------------------------------------------------------------- import


def import_llama(hf_dir: str | Path) -> tuple[ModelConfig, TransformerLM]:
    """Our config and model (float32) with the weights of a `LlamaForCausalLM` checkpoint directory.

    Refuses with a ValueError what our model cannot compute exactly as Llama does (biases, a non-silu
    activation, a RoPE type without a mapping, head_dim != hidden_size / num_attention_heads).
    """
    hf_dir = Path(hf_dir)
    cfg = model_config_from_llama(read_config(hf_dir), where=str(hf_dir / "config.json"))
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in read_safetensors(hf_dir).items():
        if DERIVED_HF_TENSOR.fullmatch(name):
            continue
        our_name = rename(name, to_hf=False)
        if our_name is None:
            raise ValueError(f"{hf_dir}: tensor {name!r} is not part of a Llama model")
        ours[our_name] = tensor
    ours = complete_tied(cfg, ours, where=str(hf_dir))
    check_tensors(cfg, ours, where=str(hf_dir))
    model = cfg.build()
    model.load_state_dict(ours, strict=True)
    return cfg, model


def model_config_from_llama(hf: Mapping[str, Any], *, where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a LlamaConfig dict (config.json of transformers 4.x or 5.x)."""

    def refuse(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}")

    if hf.get("model_type") != "llama":
        raise refuse(f"model_type {hf.get('model_type')!r} is not 'llama'")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in hf]
    if missing:
        raise refuse(f"lacks {', '.join(missing)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise refuse(f"hidden_act {hf['hidden_act']!r} is not supported (only 'silu', as in SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key, False):
            raise refuse(f"{key} is true; our projections have no biases")
    d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or d_model // n_heads
    if head_dim * n_heads != d_model:
        raise refuse(f"head_dim {head_dim} * num_attention_heads {n_heads} != hidden_size {d_model}; "
                     "our attention uses head_dim = hidden_size / num_attention_heads")
    rope = rope_from_hf(hf, where=where)
    # Shapes are written out explicitly (not left to our defaults): the checkpoint fixes them.
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        ffn_hidden=hf["intermediate_size"],
        rope=rope,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),  # LlamaConfig's default
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),  # LlamaConfig's default
        init_std=float(hf.get("initializer_range", 0.02)),
    )


__all__ = ["LLAMA_NAMES", "export_llama", "import_llama", "model_config_from_llama", "rename"]
