"""Hugging Face interop for MoE models: exported checkpoints load in transformers' MixtralForCausalLM or
Qwen2MoeForCausalLM with equal logits, import_hf reads them (and transformers' own checkpoints) back exactly,
and what no HF class computes is refused, through the library and through `isoflop export`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from isoflop.config import ConfigError, apply_overrides
from isoflop.interop import hf_moe
from isoflop.interop.hf_moe import MIXTRAL, QWEN2_MOE, export_hf, hf_architecture, import_hf
from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import ExpertChoice, MoEFFN, SigmoidBias, SoftmaxTopK
from isoflop.nn.mod_config import TopKMoD
from isoflop.nn.rope import DefaultRope
from tests.conftest import tiny_overrides
from tests.interop.hf_helpers import VOCAB, hf_logits, load_hf, our_logits, tiny_model, tokens

transformers = pytest.importorskip("transformers")

# torch warns when transformers builds Qwen2-MoE's zero-width shared expert (our "no shared expert"); the
# warning is about initialising an empty tensor, not about the checkpoint.
_EMPTY_INIT = "Initializing zero-element tensors is a no-op"

CASES = {  # name: (model overrides, the class export picks)
    "mixtral_gqa": ({"n_kv_heads": 2, "ffn": MoEFFN(experts=4, top_k=2)}, MIXTRAL),
    "mixtral_tied_frozen": ({"tie_embeddings": True, "rope": DefaultRope(theta=5e5),
                             "ffn": MoEFFN(experts=4, top_k=2, frozen_experts=1, expert_hidden=32)}, MIXTRAL),
    "qwen_every2": ({"n_layers": 4, "ffn": MoEFFN(experts=4, top_k=2, every=2, expert_hidden=32)}, QWEN2_MOE),
    "qwen_every2_no_renorm": ({"n_layers": 4, "ffn": MoEFFN(
        experts=4, top_k=2, every=2, expert_hidden=32, router=SoftmaxTopK(renormalize=False))}, QWEN2_MOE),
    "qwen_shared_gate": ({"n_layers": 4, "n_kv_heads": 2, "ffn": MoEFFN(
        experts=4, top_k=2, every=2, expert_hidden=32, shared_experts=1, shared_gate=True)}, QWEN2_MOE),
    "qwen_shared_gate_no_renorm": ({"n_layers": 4, "ffn": MoEFFN(
        experts=4, top_k=2, every=2, expert_hidden=32, shared_experts=1, shared_gate=True,
        router=SoftmaxTopK(renormalize=False))}, QWEN2_MOE),
    "qwen_shared_ungated": ({"n_layers": 4, "ffn": MoEFFN(
        experts=4, top_k=2, every=2, expert_hidden=32, shared_experts=2, frozen_experts=1)}, QWEN2_MOE),
    "qwen_every1_no_renorm": ({"ffn": MoEFFN(experts=4, top_k=2, router=SoftmaxTopK(renormalize=False))},
                              QWEN2_MOE),
}


def _model(seed: int = 0, **overrides):
    return tiny_model(seed, **{"ffn_hidden": 48, **overrides})


def _load_hf(path: Path):
    return load_hf(transformers.AutoModelForCausalLM, path, ignore=(_EMPTY_INIT,))


_tokens, _hf_logits, _our_logits = tokens, hf_logits, our_logits


# ----------------------------------------------------------------------------- export -> transformers


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_loads_in_transformers_with_equal_logits(tmp_path: Path, case: str) -> None:
    overrides, arch = CASES[case]
    cfg, model = _model(**overrides)
    assert export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64) == arch

    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    hf_model, info, messages = _load_hf(tmp_path / "hf")
    assert type(hf_model).__name__ == arch
    assert messages == [] and all(not v for v in info.values()), (messages, info)
    tokens = _tokens()
    torch.testing.assert_close(_hf_logits(hf_model, tokens), _our_logits(model, tokens), atol=1e-4, rtol=0)


def test_export_config_keys(tmp_path: Path) -> None:
    cfg, model = _model(**CASES["qwen_shared_gate_no_renorm"][0])
    export_hf(cfg, model.state_dict(), tmp_path / "qwen", max_position_embeddings=64)
    data = json.loads((tmp_path / "qwen" / "config.json").read_text())
    assert data["model_type"] == "qwen2_moe" and data["architectures"] == [QWEN2_MOE]
    assert (data["num_experts"], data["num_experts_per_tok"], data["decoder_sparse_step"], data["mlp_only_layers"],
            data["norm_topk_prob"]) == (4, 2, 2, [], False)
    assert (data["moe_intermediate_size"], data["intermediate_size"], data["shared_expert_intermediate_size"]) == (
        32, 48, 32)
    assert data["qkv_bias"] is False and data["use_sliding_window"] is False
    assert data["router_aux_loss_coef"] == cfg.ffn.aux_loss_weight

    cfg, model = _model(**CASES["mixtral_gqa"][0])
    export_hf(cfg, model.state_dict(), tmp_path / "mixtral", max_position_embeddings=64)
    data = json.loads((tmp_path / "mixtral" / "config.json").read_text())
    assert data["model_type"] == "mixtral" and data["sliding_window"] is None
    assert (data["num_local_experts"], data["num_experts_per_tok"], data["intermediate_size"]) == (4, 2, 48)
    names = load_file(tmp_path / "mixtral" / "model.safetensors")
    # the Hub's per-expert layout, which transformers 5 fuses on load
    assert names["model.layers.1.block_sparse_moe.experts.3.w2.weight"].shape == (64, 48)
    assert torch.equal(names["model.layers.1.block_sparse_moe.experts.3.w3.weight"],
                       model.state_dict()["layers.1.ffn.experts.up_proj"][3])


def test_ungated_shared_expert_is_held_exactly(tmp_path: Path) -> None:
    """sigmoid(0) * (2 * down_proj) is bitwise down_proj: the exported gate is zero, the down_proj doubled."""
    cfg, model = _model(**CASES["qwen_shared_ungated"][0])
    export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    stored = load_file(tmp_path / "hf" / "model.safetensors")
    assert not stored["model.layers.1.mlp.shared_expert_gate.weight"].any()
    assert torch.equal(stored["model.layers.1.mlp.shared_expert.down_proj.weight"],
                       2 * model.state_dict()["layers.1.ffn.shared.down_proj.weight"])
    hf_model, _, _ = _load_hf(tmp_path / "hf")
    x = torch.randn(5, 64)
    with torch.no_grad():
        hf_block, ours = hf_model.model.layers[1].mlp, model.layers[1].ffn.shared
        hf_shared = torch.sigmoid(hf_block.shared_expert_gate(x)) * hf_block.shared_expert(x)
        assert torch.equal(hf_shared, ours(x))


def test_export_bfloat16(tmp_path: Path) -> None:
    cfg, model = _model(**CASES["qwen_shared_ungated"][0])
    export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64, torch_dtype="bfloat16")
    assert {t.dtype for t in load_file(tmp_path / "hf" / "model.safetensors").values()} == {torch.bfloat16}
    hf_model, _, messages = _load_hf(tmp_path / "hf")
    assert messages == [] and hf_model.dtype == torch.bfloat16
    _, model2 = import_hf(tmp_path / "hf")
    for name, t in model.state_dict().items():  # bf16 rounding, then the exact halving of the doubled down_proj
        assert torch.equal(model2.state_dict()[name], t.to(torch.bfloat16).float()), name


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_import_round_trip_is_exact(tmp_path: Path, case: str) -> None:
    cfg, model = _model(**CASES[case][0])
    export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    cfg2, model2 = import_hf(tmp_path / "hf")

    assert cfg2 == cfg
    before, after = model.state_dict(), model2.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert [n for n, p in model2.named_parameters() if not p.requires_grad] == [
        n for n, p in model.named_parameters() if not p.requires_grad]  # frozen experts stay frozen
    tokens = _tokens()
    assert torch.equal(_our_logits(model, tokens), _our_logits(model2, tokens))


@pytest.mark.parametrize("case", ["mixtral_tied_frozen", "qwen_shared_ungated", "qwen_every2_no_renorm"])
def test_import_from_hf_keys_alone_computes_the_same(tmp_path: Path, case: str) -> None:
    """Without our stored config (a checkpoint edited by other tools), the HF keys and tensors say it all."""
    cfg, model = _model(**CASES[case][0])
    export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    path = tmp_path / "hf" / "config.json"
    data = json.loads(path.read_text())
    del data["isoflop_model"]
    path.write_text(json.dumps(data))
    cfg2, model2 = import_hf(tmp_path / "hf")
    assert cfg2.ffn.frozen_experts == 0 and cfg2.ffn.shared_gate == cfg.ffn.shared_gate
    assert (cfg2.ffn.experts, cfg2.ffn.top_k, cfg2.ffn.every, cfg2.ffn.router, cfg2.ffn.shared_experts) == (
        cfg.ffn.experts, cfg.ffn.top_k, cfg.ffn.every, cfg.ffn.router, cfg.ffn.shared_experts)
    tokens = _tokens()
    assert torch.equal(_our_logits(model, tokens), _our_logits(model2, tokens))


def _transformers_model(arch: str):
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 3e4},
                  max_position_embeddings=64, num_experts_per_tok=2)
    if arch == MIXTRAL:
        config = transformers.MixtralConfig(num_local_experts=4, intermediate_size=40, **common)
        model_class = transformers.MixtralForCausalLM
    else:
        config = transformers.Qwen2MoeConfig(num_experts=4, moe_intermediate_size=16, intermediate_size=40,
                                             shared_expert_intermediate_size=32, decoder_sparse_step=1,
                                             qkv_bias=False, norm_topk_prob=False, **common)
        model_class = transformers.Qwen2MoeForCausalLM
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():  # transformers initialises norms to 1 and the Qwen router to 0: move them
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("mlp.gate.weight"):
                p.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("arch", [MIXTRAL, QWEN2_MOE])
@pytest.mark.parametrize("layout", ["save_pretrained", "fused_state_dict"])
def test_import_transformers_checkpoint(tmp_path: Path, arch: str, layout: str) -> None:
    hf_model = _transformers_model(arch)
    if layout == "save_pretrained":  # the Hub's per-expert tensors
        hf_model.save_pretrained(tmp_path / "hf")
    else:  # transformers 5's in-memory names: fused 3-D experts, Mixtral's block named `mlp`
        hf_model.config.save_pretrained(tmp_path / "hf")
        save_file({k: v.contiguous() for k, v in hf_model.state_dict().items()},
                  tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
        assert any(k.endswith("mlp.experts.gate_up_proj") for k in load_file(tmp_path / "hf" / "model.safetensors"))

    cfg, model = import_hf(tmp_path / "hf")
    assert (cfg.ffn.experts, cfg.ffn.top_k, cfg.kv_heads, cfg.rope) == (4, 2, 2, DefaultRope(theta=3e4))
    assert cfg.ffn.router == SoftmaxTopK(renormalize=arch == MIXTRAL)
    if arch == QWEN2_MOE:
        assert (cfg.ffn.expert_hidden, cfg.ffn.shared_experts, cfg.ffn.shared_gate) == (16, 2, True)
    tokens = _tokens()
    torch.testing.assert_close(_our_logits(model.eval(), tokens), _hf_logits(hf_model, tokens), atol=1e-4, rtol=0)


def test_import_dispatches_llama(tmp_path: Path) -> None:
    cfg, model = _model(ffn_hidden=None)
    assert export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64) == "LlamaForCausalLM"
    cfg2, model2 = import_hf(tmp_path / "hf")
    assert cfg2.ffn.kind == "dense" and torch.equal(_our_logits(model, _tokens()), _our_logits(model2, _tokens()))


# ----------------------------------------------------------------------------- refusals

REFUSED = {  # config override -> the key the one-line refusal names
    "model.ffn.router.kind=expert_choice": ("model.ffn.router.kind", {"ffn": MoEFFN(experts=4, top_k=2,
                                                                                    router=ExpertChoice())}),
    "model.ffn.router.kind=sigmoid_bias": ("model.ffn.router.kind", {"ffn": MoEFFN(experts=4, top_k=2,
                                                                                   router=SigmoidBias())}),
    "model.ffn.noop_experts=1": ("model.ffn.noop_experts", {"ffn": MoEFFN(experts=4, top_k=2, noop_experts=1)}),
    "model.ffn.capacity_factor=1.25": ("model.ffn.capacity_factor",
                                       {"ffn": MoEFFN(experts=4, top_k=2, capacity_factor=1.25)}),
    "model.mod.kind=topk": ("model.mod.kind", {"ffn": MoEFFN(experts=4, top_k=2), "mod": TopKMoD()}),
}


@pytest.mark.parametrize("override", sorted(REFUSED))
def test_export_refuses_what_no_hf_class_holds(tmp_path: Path, override: str) -> None:
    key, overrides = REFUSED[override]
    cfg, model = _model(**overrides)
    with pytest.raises(ConfigError, match=f"^{key}: ") as e:
        export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_architecture_of_dense_models() -> None:
    assert hf_architecture(ModelConfig(vocab_size=VOCAB)) == "LlamaForCausalLM"
    with pytest.raises(ConfigError, match="^model.mod.kind: no Hugging Face class holds Mixture of Depths"):
        hf_architecture(ModelConfig(vocab_size=VOCAB, mod=TopKMoD()))  # dense MoD is no Llama either


@pytest.mark.parametrize(("edit", "message"), [
    ({"qkv_bias": True}, "qkv_bias is true"),
    ({"mlp_only_layers": [1]}, "mlp_only_layers \\[1\\] is not empty"),
    ({"use_sliding_window": True}, "use_sliding_window is true"),
    ({"shared_expert_intermediate_size": 40}, "not a multiple of moe_intermediate_size 32"),
    ({"num_experts_per_tok": 9}, "gives model.ffn.top_k: must be in 1..experts=4"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"model_type": "olmoe"}, "model_type 'olmoe' is not one of"),
])
def test_import_refuses_what_we_cannot_compute(tmp_path: Path, edit: dict, message: str) -> None:
    cfg, model = _model(**CASES["qwen_shared_gate"][0])
    export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ValueError, match=message):
        import_hf(tmp_path / "hf")


def test_import_refuses_mixtral_sliding_window_and_foreign_tensors(tmp_path: Path) -> None:
    cfg, model = _model(**CASES["mixtral_gqa"][0])
    export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    tensors_path = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(tensors_path)
    save_file({**tensors, "model.layers.0.block_sparse_moe.experts.4.w1.weight": torch.zeros(48, 64)}, tensors_path)
    with pytest.raises(ValueError, match="experts.4.w1.weight' is not part of a MixtralForCausalLM model"):
        import_hf(tmp_path / "hf")
    save_file(tensors, tensors_path)
    config_path = tmp_path / "hf" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "sliding_window": 8}))
    with pytest.raises(ValueError, match="sliding_window 8 is set"):
        import_hf(tmp_path / "hf")


def test_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, model = _model(**CASES["qwen_shared_gate"][0])

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hf_moe, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        export_hf(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory, corpus_dir):
    from isoflop.cli.common import load_experiment
    from isoflop.train.run import run_training

    root = tmp_path_factory.mktemp("moe_run")
    overrides = tiny_overrides(corpus_dir, steps=2) + [
        "eval.every=0", "model.ffn.kind=moe", "model.ffn.experts=4", "model.ffn.top_k=2"]
    with pytest.MonkeyPatch.context() as mp, open(os.devnull, "w") as devnull:
        mp.setenv("ISOFLOP_CACHE", str(root / "cache"))
        run_training(load_experiment("tiny", overrides), root / "run", stream=devnull)
    return root / "run"


def test_cli_exports_a_trained_moe_run(moe_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from isoflop.cli import main
    from isoflop.train.artifacts import load_model

    assert main(["export", str(moe_run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert f"({MIXTRAL})" in capsys.readouterr().out
    hf_model, _, messages = _load_hf(tmp_path / "hf")
    assert type(hf_model).__name__ == MIXTRAL and messages == []
    tokens = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_hf_logits(hf_model, tokens), _our_logits(load_model(moe_run), tokens),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("override", sorted(REFUSED))
def test_cli_refuses_with_one_line(moe_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   override: str) -> None:
    from isoflop.cli import main
    from isoflop.train.spec import ExperimentConfig

    run = tmp_path / "run"
    shutil.copytree(moe_run, run)
    data = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(apply_overrides(data, [override], ExperimentConfig)))
    capsys.readouterr()
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{REFUSED[override][0]}: " in err, err
    assert not (tmp_path / "hf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
