"""Hugging Face interop for dense models: export to / import from a `LlamaForCausalLM` checkpoint directory.

A checkpoint directory is `config.json` (a LlamaConfig) plus `model.safetensors` (or shards listed by
`model.safetensors.index.json`). Our dense model is Llama's architecture exactly (pre-norm RMSNorm in float32,
rotate-half RoPE, SwiGLU, no biases), so the conversion is a renaming of tensors and of config keys; nothing is
permuted. What Llama cannot hold (MoE FFNs, RoPE kinds without a mapping) is refused with a ValueError.

Export needs transformers (`pip install 'isoflop[hf]'`) so that config.json is written by transformers' own
LlamaConfig and loads without warnings. Import reads config.json as plain data and needs only safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from isoflop.config import ConfigError
from isoflop.nn.config import ModelConfig
from isoflop.nn.model import TransformerLM
from isoflop.nn.rope import DefaultRope, DynamicNtkRope, LinearRope, Llama3Rope, RopeConfig, YarnRope

# ----------------------------------------------------------------------------- tensor names

#: (our name, Hugging Face Llama name), read in both directions; "{i}" stands for a layer index.
LLAMA_NAMES: tuple[tuple[str, str], ...] = (
    ("embed.weight", "model.embed_tokens.weight"),
    ("layers.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("layers.{i}.attention.q_proj.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("layers.{i}.attention.k_proj.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("layers.{i}.attention.v_proj.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("layers.{i}.attention.o_proj.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("layers.{i}.ffn.gate_proj.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("layers.{i}.ffn.up_proj.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("layers.{i}.ffn.down_proj.weight", "model.layers.{i}.mlp.down_proj.weight"),
    ("norm.weight", "model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
)

# Old checkpoints (transformers < 4.31) stored RoPE's inv_freq; it is derived from the config, so it is skipped.
_DERIVED_HF_TENSOR = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


@cache
def _name_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(re.escape("{i}"), r"(?P<i>\d+)"))


def rename(name: str, *, to_hf: bool) -> str | None:
    """Our tensor name as Hugging Face's (`to_hf`) or the reverse; None for a name the table does not hold."""
    for ours, hf in LLAMA_NAMES:
        source, target = (ours, hf) if to_hf else (hf, ours)
        match = _name_regex(source).fullmatch(name)
        if match:
            return target.format(**match.groupdict())
    return None


# ----------------------------------------------------------------------------- RoPE kinds
# A RoPE kind Llama can hold has one entry in each table: ours -> HF keyed by our `model.rope.kind`, and
# HF -> ours keyed by HF's `rope_type`. Each HF dict holds `rope_type`, `rope_theta` and that type's knobs
# (transformers 5's `rope_parameters`).


def _default_rope_to_hf(rope: DefaultRope) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": rope.theta}


def _default_rope_from_hf(params: Mapping[str, Any]) -> RopeConfig:
    # Other keys (e.g. partial_rotary_factor) are ignored, as LlamaRotaryEmbedding ignores them for "default".
    return DefaultRope(theta=float(params["rope_theta"]))


def _linear_rope_to_hf(rope: LinearRope) -> dict[str, Any]:
    return {"rope_type": "linear", "rope_theta": rope.theta, "factor": rope.factor}


def _linear_rope_from_hf(params: Mapping[str, Any]) -> RopeConfig:
    return LinearRope(theta=float(params["rope_theta"]), factor=float(params["factor"]))


def _dynamic_rope_to_hf(rope: DynamicNtkRope) -> dict[str, Any]:
    # HF measures the length against `max_position_embeddings`, which export_llama checks is our original length.
    return {"rope_type": "dynamic", "rope_theta": rope.theta, "factor": rope.factor}


def _dynamic_rope_from_hf(params: Mapping[str, Any]) -> RopeConfig:
    return DynamicNtkRope(theta=float(params["rope_theta"]), factor=float(params["factor"]),
                          original_max_position_embeddings=int(params["original_max_position_embeddings"]))


def _yarn_rope_to_hf(rope: YarnRope) -> dict[str, Any]:
    out = {"rope_type": "yarn", "rope_theta": rope.theta, "factor": rope.factor,
           "original_max_position_embeddings": rope.original_max_position_embeddings,
           "beta_fast": rope.beta_fast, "beta_slow": rope.beta_slow, "truncate": rope.truncate}
    optional = {"attention_factor": rope.attention_factor_override, "mscale": rope.mscale,
                "mscale_all_dim": rope.mscale_all_dim}
    return out | {key: value for key, value in optional.items() if value is not None}


def _yarn_rope_from_hf(params: Mapping[str, Any]) -> RopeConfig:
    def optional(key: str) -> float | None:
        return None if params.get(key) is None else float(params[key])

    return YarnRope(theta=float(params["rope_theta"]), factor=float(params["factor"]),
                    original_max_position_embeddings=int(params["original_max_position_embeddings"]),
                    beta_fast=float(params.get("beta_fast") or 32),  # HF's defaults, also for a stored null
                    beta_slow=float(params.get("beta_slow") or 1),
                    truncate=bool(params.get("truncate", True)),
                    attention_factor_override=optional("attention_factor"), mscale=optional("mscale"),
                    mscale_all_dim=optional("mscale_all_dim"))


def _llama3_rope_to_hf(rope: Llama3Rope) -> dict[str, Any]:
    return {"rope_type": "llama3", "rope_theta": rope.theta, "factor": rope.factor,
            "low_freq_factor": rope.low_freq_factor, "high_freq_factor": rope.high_freq_factor,
            "original_max_position_embeddings": rope.original_max_position_embeddings}


def _llama3_rope_from_hf(params: Mapping[str, Any]) -> RopeConfig:
    return Llama3Rope(theta=float(params["rope_theta"]), factor=float(params["factor"]),
                      low_freq_factor=float(params["low_freq_factor"]),
                      high_freq_factor=float(params["high_freq_factor"]),
                      original_max_position_embeddings=int(params["original_max_position_embeddings"]))


ROPE_TO_HF: dict[str, Callable[[Any], dict[str, Any]]] = {
    "default": _default_rope_to_hf, "linear": _linear_rope_to_hf, "dynamic": _dynamic_rope_to_hf,
    "yarn": _yarn_rope_to_hf, "llama3": _llama3_rope_to_hf}
ROPE_FROM_HF: dict[str, Callable[[Mapping[str, Any]], RopeConfig]] = {
    "default": _default_rope_from_hf, "linear": _linear_rope_from_hf, "dynamic": _dynamic_rope_from_hf,
    "yarn": _yarn_rope_from_hf, "llama3": _llama3_rope_from_hf}

_LLAMA_MAX_POSITION_EMBEDDINGS = 2048  # LlamaConfig's default


def _hf_rope_parameters(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The RoPE dict of a config.json in transformers 5's form, also from 4.x's `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    params.setdefault("rope_type", params.pop("type", "default"))  # 4.x wrote `type` before `rope_type`
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))  # LlamaConfig's default theta
    max_positions = hf.get("max_position_embeddings", _LLAMA_MAX_POSITION_EMBEDDINGS)
    if params["rope_type"] in ("llama3", "yarn"):  # as transformers' standardize_rope_params
        params.setdefault("original_max_position_embeddings", max_positions)
    if params["rope_type"] == "dynamic":  # transformers' dynamic NTK measures against max_position_embeddings
        params["original_max_position_embeddings"] = max_positions
    if params["rope_type"] == "yarn" and params.get("factor") is None:  # transformers' rule (DeepSeek-V3)
        params["factor"] = max_positions / params["original_max_position_embeddings"]
    return params


# ----------------------------------------------------------------------------- export


_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_llama(model_cfg: ModelConfig, state_dict: Mapping[str, torch.Tensor], out_dir: str | Path, *,
                 max_position_embeddings: int, torch_dtype: str = "float32") -> None:
    """Write `config.json` and `model.safetensors` that `LlamaForCausalLM.from_pretrained(out_dir)` loads.

    `state_dict` is our model's (tied models may hold `lm_head.weight`, `embed.weight` or both); tensors are
    cast to `torch_dtype`. `out_dir` must not exist or be empty; it appears whole or not at all.
    """
    _check_llama_compatible(model_cfg)
    _check_export_args(model_cfg, max_position_embeddings=max_position_embeddings, torch_dtype=torch_dtype)
    hf_config = _llama_config(model_cfg, max_position_embeddings=max_position_embeddings, torch_dtype=torch_dtype)
    ours = _complete_tied(model_cfg, dict(state_dict), where="state_dict")
    _check_tensors(model_cfg, ours, where="state_dict")
    dtype = _DTYPES[torch_dtype]
    tensors = {rename(name, to_hf=True): t.detach().to("cpu", dtype).contiguous()
               for name, t in ours.items() if not (model_cfg.tie_embeddings and name == "lm_head.weight")}

    def write(tmp: Path) -> None:
        hf_config.save_pretrained(tmp)
        # "format": "pt" is the metadata transformers checks to know the file holds PyTorch-layout tensors.
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})

    _write_dir_atomically(Path(out_dir), write)


def _check_export_args(cfg: ModelConfig, *, max_position_embeddings: int, torch_dtype: str) -> None:
    """The export arguments every architecture shares (hf_moe.py uses it too)."""
    if torch_dtype not in _DTYPES:
        raise ValueError(f"torch_dtype: {torch_dtype!r} is not one of {', '.join(_DTYPES)}")
    if max_position_embeddings <= 0:
        raise ValueError(f"max_position_embeddings: must be positive, got {max_position_embeddings}")
    rescale_beyond = cfg.rope.rescale_beyond()
    if rescale_beyond is not None and rescale_beyond != max_position_embeddings:
        raise ValueError(f"max_position_embeddings: must equal the {cfg.rope.kind!r} rope's original length "
                         f"{rescale_beyond}, which transformers reads from it, got {max_position_embeddings}")


def _check_llama_compatible(cfg: ModelConfig) -> None:
    if cfg.ffn.kind != "dense":
        raise ValueError(f"model.ffn.kind: a Llama checkpoint holds only 'dense' FFNs, got {cfg.ffn.kind!r}")
    _check_llama_attention(cfg)


def _check_llama_attention(cfg: ModelConfig) -> None:
    """What Llama's attention, RoPE and head cannot hold (shared with Mixtral and Qwen2-MoE in hf_moe.py)."""
    if cfg.rope.kind not in ROPE_TO_HF:
        raise ValueError(f"model.rope.kind: no Llama rope_parameters mapping for {cfg.rope.kind!r} "
                         f"(mapped: {', '.join(sorted(ROPE_TO_HF))})")
    if cfg.rope.log_n_length is not None:
        raise ValueError(f"model.rope.log_n_length: Llama has no log-n query scaling, got {cfg.rope.log_n_length}")
    if cfg.layout.kind != "full":
        raise ConfigError("model.layout.kind", f"Llama attends to the whole prefix with RoPE in every layer; "
                                               f"layout {cfg.layout.kind!r} (window / NoPE layers) cannot be held")
    if cfg.tied_init in ("projection", "half_swap"):
        raise ConfigError("model.tied_init", f"{cfg.tied_init!r} changes the head's input, which Llama's tied "
                                             "head cannot hold (only 'normal' and 'ln_vocab', which are inits)")


def _llama_config(cfg: ModelConfig, *, max_position_embeddings: int, torch_dtype: str) -> Any:
    """transformers' own LlamaConfig, so its save_pretrained writes exactly the keys its loader expects."""
    transformers = _import_transformers()
    return transformers.LlamaConfig(
        architectures=["LlamaForCausalLM"],
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
        rope_parameters=ROPE_TO_HF[cfg.rope.kind](cfg.rope),
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        # The model is tokenizer-agnostic; the tokenizer export owns these ids.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        dtype=torch_dtype,
    )


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError("Hugging Face export needs transformers: pip install 'isoflop[hf]'") from e
    major = int(transformers.__version__.split(".")[0])
    if major < 5:  # 4.x names the RoPE keys differently (rope_theta, rope_scaling)
        raise ImportError(f"Hugging Face export needs transformers>=5, found {transformers.__version__}: "
                          "pip install -U 'isoflop[hf]'")
    return transformers


def _write_dir_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Run `write` into a temporary sibling directory, then rename it to `out_dir` (one rename: all or nothing)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        write(tmp)
        os.replace(tmp, out_dir)  # replaces an empty directory too (POSIX rename)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- import


def import_llama(hf_dir: str | Path) -> tuple[ModelConfig, TransformerLM]:
    """Our config and model (float32) with the weights of a `LlamaForCausalLM` checkpoint directory.

    Refuses with a ValueError what our model cannot compute exactly as Llama does (biases, a non-silu
    activation, a RoPE type without a mapping, head_dim != hidden_size / num_attention_heads).
    """
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such file")
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: cannot parse: {e}") from None
    cfg = model_config_from_llama(hf, where=str(config_path))
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in _read_safetensors(hf_dir).items():
        if _DERIVED_HF_TENSOR.fullmatch(name):
            continue
        our_name = rename(name, to_hf=False)
        if our_name is None:
            raise ValueError(f"{hf_dir}: tensor {name!r} is not part of a Llama model")
        ours[our_name] = tensor
    ours = _complete_tied(cfg, ours, where=str(hf_dir))
    _check_tensors(cfg, ours, where=str(hf_dir))
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
    rope = _hf_rope_parameters(hf)
    if rope["rope_type"] not in ROPE_FROM_HF:
        raise refuse(f"rope type {rope['rope_type']!r} has no isoflop mapping "
                     f"(mapped: {', '.join(sorted(ROPE_FROM_HF))})")
    # Shapes are written out explicitly (not left to our defaults): the checkpoint fixes them.
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        ffn_hidden=hf["intermediate_size"],
        rope=ROPE_FROM_HF[rope["rope_type"]](rope),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),  # LlamaConfig's default
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),  # LlamaConfig's default
        init_std=float(hf.get("initializer_range", 0.02)),
    )


def _read_safetensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of the shards `model.safetensors.index.json` lists."""
    single, index = hf_dir / "model.safetensors", hf_dir / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if not index.is_file():
        raise FileNotFoundError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json "
                                "(PyTorch .bin checkpoints are not read)")
    weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(load_file(hf_dir / shard))
    if set(tensors) != set(weight_map):
        raise ValueError(f"{index}: the shards' tensors differ from its weight_map")
    return tensors


# ----------------------------------------------------------------------------- checks shared by both ways


def _complete_tied(cfg: ModelConfig, ours: dict[str, torch.Tensor], *, where: str) -> dict[str, torch.Tensor]:
    """With tied embeddings, fill in whichever of embed/lm_head is absent (a checkpoint may store either);
    refuse if both are present and differ."""
    if not cfg.tie_embeddings:
        return ours
    embed, head = ours.get("embed.weight"), ours.get("lm_head.weight")
    if embed is None and head is not None:
        ours["embed.weight"] = head
    elif head is None and embed is not None:
        ours["lm_head.weight"] = embed
    elif embed is not None and head is not None and embed is not head and not torch.equal(embed, head):
        raise ValueError(f"{where}: embeddings are tied but the embedding and output head weights differ")
    return ours


def _check_tensors(cfg: ModelConfig, ours: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Names and shapes equal to those of the model `cfg` builds (one line naming the first problems)."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = {name: t.shape for name, t in cfg.build().state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:3])}" if missing else "",
                 f"unexpected {', '.join(unexpected[:3])}" if unexpected else ""]
        raise ValueError(f"{where}: tensors do not match the config: {'; '.join(p for p in parts if p)}")
    for name, shape in expected.items():
        if ours[name].shape != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(ours[name].shape)}, the config gives {tuple(shape)}")


__all__ = ["LLAMA_NAMES", "ROPE_FROM_HF", "ROPE_TO_HF", "export_llama", "import_llama", "model_config_from_llama",
           "rename"]
