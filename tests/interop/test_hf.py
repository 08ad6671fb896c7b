"""Hugging Face interop: exported checkpoints load in transformers' LlamaForCausalLM with equal logits, and
import_llama reads them (and transformers' own checkpoints) back exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from isoflop.config import ConfigError
from isoflop.interop import hf
from isoflop.interop.hf import export_llama, import_llama
from isoflop.nn.ffn_config import MoEFFN
from isoflop.nn.rope import DefaultRope, NtkRope
from tests.interop.hf_helpers import VOCAB, hf_logits, load_hf, our_logits, tiny_model, tokens

transformers = pytest.importorskip("transformers")


CASES = {
    "untied_mha": {},
    "tied": {"tie_embeddings": True},
    "gqa": {"n_kv_heads": 2, "n_layers": 3},
    "rope_theta": {"rope": DefaultRope(theta=500_000.0)},
    "ffn_hidden": {"ffn_hidden": 96, "norm_eps": 1e-6},
}


def _model(seed: int = 0, **overrides):
    return tiny_model(seed, **{**overrides})


def _load_hf(path: Path):
    return load_hf(transformers.LlamaForCausalLM, path, ignore=())


_tokens, _hf_logits, _our_logits = tokens, hf_logits, our_logits


# ----------------------------------------------------------------------------- export -> transformers


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_loads_in_transformers_with_equal_logits(tmp_path: Path, case: str) -> None:
    cfg, model = _model(**CASES[case])
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)

    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary directory left behind
    hf_model, info, messages = _load_hf(tmp_path / "hf")
    assert messages == []
    assert all(not v for v in info.values()), info
    if cfg.tie_embeddings:
        assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
        assert "lm_head.weight" not in load_file(tmp_path / "hf" / "model.safetensors")

    tokens = _tokens()
    torch.testing.assert_close(_hf_logits(hf_model, tokens), _our_logits(model, tokens), atol=1e-4, rtol=0)


def test_export_config_is_a_llama_config(tmp_path: Path) -> None:
    cfg, model = _model(n_kv_heads=2, rope=DefaultRope(theta=12345.0))
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=256)
    data = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert data["model_type"] == "llama" and data["architectures"] == ["LlamaForCausalLM"]
    assert data["rope_parameters"] == {"rope_type": "default", "rope_theta": 12345.0}
    assert (data["hidden_size"], data["num_attention_heads"], data["num_key_value_heads"], data["head_dim"]) == (
        64, 4, 2, 16)
    assert data["intermediate_size"] == cfg.ffn_hidden_size and data["max_position_embeddings"] == 256
    assert data["hidden_act"] == "silu" and not data["attention_bias"] and not data["mlp_bias"]
    assert data["bos_token_id"] is None and data["eos_token_id"] is None


def test_export_bfloat16(tmp_path: Path) -> None:
    cfg, model = _model()
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64, torch_dtype="bfloat16")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    stored = load_file(tmp_path / "hf" / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    hf_model, _, messages = _load_hf(tmp_path / "hf")
    assert messages == [] and hf_model.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("case", ["untied_mha", "tied", "gqa"])
def test_export_import_round_trip_is_exact(tmp_path: Path, case: str) -> None:
    cfg, model = _model(**CASES[case])
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    cfg2, model2 = import_llama(tmp_path / "hf")

    assert (cfg2.kv_heads, cfg2.ffn_hidden_size, cfg2.rope, cfg2.tie_embeddings, cfg2.norm_eps) == (
        cfg.kv_heads, cfg.ffn_hidden_size, cfg.rope, cfg.tie_embeddings, cfg.norm_eps)
    before, after = model.state_dict(), model2.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    if cfg.tie_embeddings:
        assert model2.lm_head.weight is model2.embed.weight
    tokens = _tokens()
    assert torch.equal(_our_logits(model, tokens), _our_logits(model2, tokens))


@pytest.mark.parametrize("tied", [False, True])
def test_import_transformers_checkpoint(tmp_path: Path, tied: bool) -> None:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 3e4},
        tie_word_embeddings=tied, max_position_embeddings=64)
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    hf_model.save_pretrained(tmp_path / "hf")

    cfg, model = import_llama(tmp_path / "hf")
    assert (cfg.d_model, cfg.kv_heads, cfg.ffn_hidden_size, cfg.rope, cfg.tie_embeddings) == (
        64, 2, 80, DefaultRope(theta=3e4), tied)
    tokens = _tokens()
    torch.testing.assert_close(_our_logits(model.eval(), tokens), _hf_logits(hf_model, tokens), atol=1e-4, rtol=0)


def test_import_reads_transformers_4_config_and_shards(tmp_path: Path) -> None:
    cfg, model = _model(rope=DefaultRope(theta=2e4))
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    # transformers 4.x wrote rope_theta at the top level and rope_scaling for scaled kinds only.
    path = tmp_path / "hf" / "config.json"
    data = json.loads(path.read_text())
    data.pop("rope_parameters")
    path.write_text(json.dumps({**data, "rope_theta": 2e4, "rope_scaling": None}))
    # Split the weights into two shards listed by an index, as save_pretrained does for large models.
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    (tmp_path / "hf" / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, tmp_path / "hf" / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: f for f, shard_names in shards.items() for n in shard_names}}
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))

    cfg2, model2 = import_llama(tmp_path / "hf")
    assert cfg2.rope == DefaultRope(theta=2e4)
    tokens = _tokens()
    assert torch.equal(_our_logits(model, tokens), _our_logits(model2, tokens))


def test_name_table_round_trips() -> None:
    _, model = _model(n_layers=3)
    for name in model.state_dict():
        hf_name = hf.rename(name, to_hf=True)
        assert hf_name is not None and hf.rename(hf_name, to_hf=False) == name
    assert hf.rename("layers.12.ffn.down_proj.weight", to_hf=True) == "model.layers.12.mlp.down_proj.weight"
    assert hf.rename("layers.0.ffn.router.weight", to_hf=True) is None


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("slot", "variant", "message"), [
    ("ffn", MoEFFN(experts=4, top_k=2), "model.ffn.kind: a Llama checkpoint holds only 'dense' FFNs, got 'moe'"),
    ("rope", NtkRope(factor=2.0), "model.rope.kind: no Llama rope_parameters mapping for 'ntk'"),
])
def test_export_refuses_what_llama_cannot_hold(tmp_path: Path, slot: str, variant, message: str) -> None:
    cfg, model = _model()
    setattr(cfg, slot, variant)  # the dense model's weights: the refusal comes before any tensor is read
    with pytest.raises(ValueError, match=message) as e:
        export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_mismatched_state_dict(tmp_path: Path) -> None:
    cfg, model = _model()
    state = model.state_dict()
    del state["layers.1.ffn.up_proj.weight"]
    with pytest.raises(ValueError, match="missing layers.1.ffn.up_proj.weight"):
        export_llama(cfg, state, tmp_path / "hf", max_position_embeddings=64)
    _, wider = _model(d_model=128)
    with pytest.raises(ValueError, match="embed.weight has shape"):
        export_llama(cfg, wider.state_dict(), tmp_path / "hf", max_position_embeddings=64)


def test_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, model = _model()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary directory

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        export_llama(cfg, model.state_dict(), tmp_path / "full", max_position_embeddings=64)


@pytest.mark.parametrize(("edit", "message"), [
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"attention_bias": True}, "attention_bias is true"),
    ({"mlp_bias": True}, "mlp_bias is true"),
    ({"model_type": "mistral"}, "model_type 'mistral' is not 'llama'"),
    ({"head_dim": 32}, "head_dim 32 \\* num_attention_heads 4 != hidden_size 64"),
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "factor": 4.0}}, "rope type 'longrope'"),
])
def test_import_refuses_what_we_cannot_compute(tmp_path: Path, edit: dict, message: str) -> None:
    cfg, model = _model()
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ValueError, match=message):
        import_llama(tmp_path / "hf")


def test_import_refuses_foreign_tensor(tmp_path: Path) -> None:
    cfg, model = _model()
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    path = tmp_path / "hf" / "model.safetensors"
    save_file({**load_file(path), "model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, path)
    with pytest.raises(ValueError, match="'model.layers.0.self_attn.q_proj.bias' is not part of a Llama model"):
        import_llama(tmp_path / "hf")


def test_load_warning_capture_sees_a_bad_checkpoint(tmp_path: Path) -> None:
    """The no-warning assertions above are not vacuous: an unexpected tensor is reported through _load_hf."""
    cfg, model = _model()
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    path = tmp_path / "hf" / "model.safetensors"
    save_file({**load_file(path), "model.layers.0.extra.weight": torch.zeros(3)}, path, metadata={"format": "pt"})
    _, info, messages = _load_hf(tmp_path / "hf")
    assert info["unexpected_keys"] and any("model.layers.0.extra.weight" in m for m in messages), messages


def test_export_without_transformers_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, model = _model()
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install 'isoflop\[hf\]'"):
        export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    assert list(tmp_path.iterdir()) == []
