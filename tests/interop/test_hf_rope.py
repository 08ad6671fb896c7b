"""Hugging Face interop for the scaled RoPE kinds: exported checkpoints give transformers' LlamaForCausalLM the
same logits at a sequence length beyond the original training length, and import back to the same config."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from isoflop.interop.hf import export_llama, import_llama, model_config_from_llama
from isoflop.nn.rope import LinearRope, NtkRope
from isoflop.nn.rope_scaled import DynamicNtkRope, Llama3Rope, YarnRope
from tests.interop.test_hf import _model as seeded_model

transformers = pytest.importorskip("transformers")

VOCAB, ORIGINAL, SEQ = 97, 16, 40  # SEQ > ORIGINAL: the scaled frequencies are exercised past the training length

# theta = 500 with head_dim 16 puts the pairs' wavelengths (6 .. 2e3) on both sides of ORIGINAL, so yarn's ramp
# and llama3's three bands are all in use.
ROPES = {
    "linear": LinearRope(theta=500.0, factor=4.0),
    "dynamic": DynamicNtkRope(theta=500.0, factor=3.0, original_max_position_embeddings=ORIGINAL),
    "yarn": YarnRope(theta=500.0, factor=4.0, original_max_position_embeddings=ORIGINAL, beta_fast=8.0,
                     beta_slow=0.5),
    "yarn_untruncated": YarnRope(theta=500.0, factor=4.0, original_max_position_embeddings=ORIGINAL, beta_fast=8.0,
                                 beta_slow=0.5, truncate=False),
    "yarn_mscale": YarnRope(theta=500.0, factor=8.0, original_max_position_embeddings=ORIGINAL, mscale=1.0,
                            mscale_all_dim=0.5),
    "llama3": Llama3Rope(theta=500.0, factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                         original_max_position_embeddings=ORIGINAL),
}


def _model(rope, seed: int = 0):
    return seeded_model(seed, n_kv_heads=2, rope=rope)


def _max_positions(rope) -> int:
    # dynamic NTK: transformers measures against max_position_embeddings; the others extend by their factor.
    return ORIGINAL if rope.kind == "dynamic" else int(ORIGINAL * rope.factor)


def _tokens(length: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", sorted(ROPES))
def test_export_gives_transformers_equal_logits_beyond_the_original_length(tmp_path: Path, case: str) -> None:
    rope = ROPES[case]
    cfg, model = _model(rope)
    export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=_max_positions(rope))
    data = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert data["rope_parameters"] == rope.to_hf(max_position_embeddings=_max_positions(rope))
    assert data["rope_parameters"]["rope_type"] == rope.kind

    messages: list[str] = []
    handler, logger = logging.Handler(logging.WARNING), logging.getLogger("transformers")
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hf_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    finally:
        logger.removeHandler(handler)
    assert messages + [str(w.message) for w in caught] == []  # transformers accepts the rope_parameters as is
    assert hf_model.model.rotary_emb.attention_scaling == pytest.approx(rope.attention_factor(), rel=1e-12)
    for length in (ORIGINAL // 2, SEQ):  # within and beyond the training length
        tokens = _tokens(length)
        with torch.no_grad():
            theirs, ours = hf_model(input_ids=tokens).logits, model(tokens)
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    cfg2, model2 = import_llama(tmp_path / "hf")
    assert cfg2.rope == rope
    with torch.no_grad():
        torch.testing.assert_close(model2(_tokens()), model(_tokens()), atol=0, rtol=0)


def test_scaled_rope_differs_from_plain_rope_beyond_the_original_length(tmp_path: Path) -> None:
    """The parity above is not vacuous: the kinds change the logits at SEQ."""
    _, plain = _model(LinearRope(theta=500.0, factor=1.0))
    for rope in ROPES.values():
        _, model = _model(rope)
        with torch.no_grad():
            assert not torch.allclose(plain(_tokens()), model(_tokens()), atol=1e-3)


def test_dynamic_export_needs_the_original_length(tmp_path: Path) -> None:
    cfg, model = _model(ROPES["dynamic"])
    with pytest.raises(ValueError, match="max_position_embeddings: must equal the 'dynamic' rope's original length"):
        export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=4 * ORIGINAL)
    assert list(tmp_path.iterdir()) == []


def test_static_ntk_has_no_mapping(tmp_path: Path) -> None:
    """transformers has no static NTK type (it is "default" with a scaled theta); export refuses rather than guess."""
    cfg, model = _model(NtkRope(theta=500.0, factor=4.0))
    with pytest.raises(ValueError, match="no Llama rope_parameters mapping for 'ntk'"):
        export_llama(cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=64)


def _llama(rope_parameters: dict, **extra) -> dict:
    return {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 1, "num_attention_heads": 4, "rope_parameters": rope_parameters, **extra}


def test_import_reads_transformers_defaults_and_4x_rope_scaling() -> None:
    # dynamic: the original length is max_position_embeddings
    cfg = model_config_from_llama(_llama({"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0},
                                         max_position_embeddings=4096))
    assert cfg.rope == DynamicNtkRope(theta=1e4, factor=2.0, original_max_position_embeddings=4096)
    # yarn / llama3 without original_max_position_embeddings: max_position_embeddings (standardize_rope_params)
    cfg = model_config_from_llama(_llama({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
                                          "beta_fast": None}, max_position_embeddings=1024))
    assert cfg.rope == YarnRope(theta=1e4, factor=4.0, original_max_position_embeddings=1024)
    # yarn without factor: max_position_embeddings / original (DeepSeek-V3's rule in transformers)
    cfg = model_config_from_llama(_llama({"rope_type": "yarn", "rope_theta": 1e4, "factor": None,
                                          "original_max_position_embeddings": 1024}, max_position_embeddings=8192))
    assert cfg.rope.factor == 8.0
    # 4.x: rope_theta beside rope_scaling, whose type key may be "type"
    data = _llama(None, rope_theta=5e5, max_position_embeddings=131072,
                  rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192})
    assert model_config_from_llama(data).rope == Llama3Rope(original_max_position_embeddings=8192)
    data = _llama(None, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert model_config_from_llama(data).rope == LinearRope(theta=1e4, factor=2.0)


def test_a_dynamic_rope_run_trained_at_seq_len_64_exports_with_equal_logits(tmp_path: Path, corpus_dir,
                                                                              cache_dir, capsys) -> None:
    """The original length of dynamic / yarn / llama3 defaults to the training length: a run at data.seq_len=64
    keeps `null` in its config.json, builds with L = 64, and `isoflop export` (which writes
    max_position_embeddings = data.seq_len, where transformers' dynamic NTK reads L) gives transformers' logits,
    below and beyond L."""
    import os

    from isoflop.cli import main
    from isoflop.cli.common import load_experiment
    from isoflop.train.artifacts import load_model
    from isoflop.train.run import run_training
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(corpus_dir, steps=2) + ["eval.every=0", "data.seq_len=64", "model.rope=dynamic",
                                                       "model.rope.factor=4.0"]
    cfg = load_experiment("tiny", overrides)
    assert cfg.model.rope.original_max_position_embeddings is None
    assert cfg.resolved_model.rope == DynamicNtkRope(factor=4.0, original_max_position_embeddings=64)
    with open(os.devnull, "w") as devnull:
        run_training(cfg, tmp_path / "run", stream=devnull)
    from isoflop.rundir import RunDir

    saved = RunDir(tmp_path / "run").read_config()
    assert saved["model"]["rope"]["original_max_position_embeddings"] is None

    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    hf_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model = load_model(tmp_path / "run")
    for length in (20, 150):  # within and beyond L = 64, where the dynamic base grows
        tokens = torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(hf_model(input_ids=tokens).logits, model(tokens), atol=1e-4, rtol=0)
