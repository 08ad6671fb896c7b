"""What the Hugging Face converters share (hf.py: Llama; hf_moe.py: Mixtral and Qwen2-MoE).

- the Llama names of the tensors every architecture has (embeddings, attention, norms, dense FFN blocks);
- `holdable(cfg)`: whether a transformers class computes `cfg`, asked of each variant (the MoD kind, the FFN
  kind, the RoPE kind, the layout, the tied head), which answers for itself; a refusal is one ConfigError line
  naming the key;
- reading a checkpoint folder (config.json, safetensors shards) and the checks both directions make.

Export needs transformers (`pip install 'isoflop[hf]'`) so that config.json is written by transformers' own
config classes and loads without warnings. Import reads config.json as plain data and needs only safetensors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file

from isoflop.config import ConfigError
from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import HfFFN
from isoflop.nn.rope import RopeConfig

T = TypeVar("T")

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

#: Old checkpoints (transformers < 4.31) stored RoPE's inv_freq; it is derived from the config, so it is skipped.
DERIVED_HF_TENSOR = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


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


# ----------------------------------------------------------------------------- what a transformers class holds


def _under(prefix: str, ask: Callable[[], T]) -> T:
    """`ask()`, its ConfigError's key put under `prefix` (a variant's keys are relative to itself)."""
    try:
        return ask()
    except ConfigError as e:
        raise e.under(prefix) from None


def holdable(cfg: ModelConfig) -> HfFFN:
    """The Hugging Face form of `cfg`'s FFN (which names the transformers class), once every slot has said a
    transformers class computes it; else the first slot's ConfigError, keyed `model.<slot>...`."""
    _under("model.mod", cfg.mod.check_hf)
    spec = _under("model.ffn", lambda: cfg.ffn.hf(cfg.ffn_hidden_size))
    _under("model.rope", cfg.rope.check_hf)
    _under("model.layout", cfg.layout.check_hf)
    _under("model.tied_init", cfg.tied_init.check_hf)
    return spec


def rope_parameters(cfg: ModelConfig, *, max_position_embeddings: int) -> dict[str, Any]:
    """transformers 5's `rope_parameters` of `cfg`'s RoPE kind."""
    return _under("model.rope", lambda: cfg.rope.to_hf(max_position_embeddings=max_position_embeddings))


_LLAMA_MAX_POSITION_EMBEDDINGS = 2048  # LlamaConfig's default
_LLAMA_ROPE_THETA = 10000.0  # LlamaConfig's default


def rope_from_hf(hf: Mapping[str, Any], *, where: str) -> RopeConfig:
    """Our RoPE kind for a config.json in transformers 5's form (`rope_parameters`), or 4.x's (`rope_theta`
    beside `rope_scaling`, whose type key was `type` before `rope_type`)."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    params.setdefault("rope_type", params.pop("type", "default"))
    params.setdefault("rope_theta", hf.get("rope_theta", _LLAMA_ROPE_THETA))
    max_positions = hf.get("max_position_embeddings", _LLAMA_MAX_POSITION_EMBEDDINGS)
    try:
        return RopeConfig.from_hf(params, max_position_embeddings=max_positions)
    except ConfigError as e:
        raise ValueError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- export


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_export_args(*, max_position_embeddings: int, torch_dtype: str) -> None:
    """The export arguments every architecture shares."""
    if torch_dtype not in DTYPES:
        raise ValueError(f"torch_dtype: {torch_dtype!r} is not one of {', '.join(DTYPES)}")
    if max_position_embeddings <= 0:
        raise ValueError(f"max_position_embeddings: must be positive, got {max_position_embeddings}")


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError("Hugging Face export needs transformers: pip install 'isoflop[hf]'") from e
    major = int(transformers.__version__.split(".")[0])
    if major < 5:  # 4.x names the RoPE keys differently (rope_theta, rope_scaling)
        raise ImportError(f"Hugging Face export needs transformers>=5, found {transformers.__version__}: "
                          "pip install -U 'isoflop[hf]'")
    return transformers


# ----------------------------------------------------------------------------- import


def read_config(hf_dir: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, as plain data."""
    path = hf_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: cannot parse: {e}") from None


def read_safetensors(hf_dir: Path) -> dict[str, torch.Tensor]:
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


def complete_tied(cfg: ModelConfig, ours: dict[str, torch.Tensor], *, where: str) -> dict[str, torch.Tensor]:
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


def check_tensors(cfg: ModelConfig, ours: Mapping[str, torch.Tensor], *, where: str) -> None:
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
