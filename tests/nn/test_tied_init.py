"""Tied-embedding initialisation (Su, kexue.fm 9698): the initial loss of a tied model whose residual branches
are zero is the bigram prediction log(e^(d sigma) + (V - 1) e^(d sigma^2 / 2)) for plain tied init, and close
to ln V for the three remedies; counting equals the built model for every option; the checkpoint keys and the
config forms older runs wrote still load; HF export holds the pure inits and refuses what Llama cannot hold."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from isoflop.config import ConfigError, apply_overrides
from isoflop.interop.hf import export_llama
from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import flops_per_token, param_groups
from isoflop.nn.head_config import HalfSwapTiedInit, ProjectionTiedInit, TiedInit

V, D = 8192, 256
OPTIONS = ["normal", "ln_vocab", "projection", "half_swap"]


def _initial_loss(tied_init: str, init_std: float = 0.02) -> float:
    """Mean next-token loss on uniform random tokens with every residual output projection zeroed, so each
    block is the identity and the logits are head(norm(embedding))."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(dict(vocab_size=V, d_model=D, n_layers=2, n_heads=4, tie_embeddings=True,
                                     tied_init=tied_init, init_std=init_std))
    model = cfg.build()
    with torch.no_grad():
        for block in model.layers:
            block.attention.o_proj.weight.zero_()
            block.ffn.down_proj.weight.zero_()
        tokens = torch.randint(0, V, (4, 65), generator=torch.Generator().manual_seed(1))
        logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).item()


def _bigram_prediction(sigma: float) -> float:
    """Su 9698's tied bigram model: after RMSNorm the input row w_i has norm sqrt(d), its own logit is
    |w_i| sqrt(d) ~ d sigma, and every other logit is ~ N(0, d sigma^2) (mean exp: e^(d sigma^2 / 2))."""
    return math.log(math.exp(D * sigma) + (V - 1) * math.exp(D * sigma**2 / 2))


def test_plain_tied_init_with_unit_norm_rows_starts_far_above_ln_v():
    sigma = D**-0.5  # sigma^2 = 1/d: the self-logit is sqrt(d) = 16
    loss = _initial_loss("normal", init_std=sigma)
    assert loss == pytest.approx(_bigram_prediction(sigma), rel=0.03)
    assert loss > 1.5 * math.log(V)  # 16.2 against ln V = 9.01


@pytest.mark.parametrize("tied_init", ["ln_vocab", "projection", "half_swap"])
def test_remedies_start_near_ln_v(tied_init):
    # ln_vocab puts the self-logit at ln V, so its prediction is ~ ln(2V) (+ the spread term): 8.8 % above ln V
    # here, the "loss ~ log n" of the post; the other two remove the self term and sit just above ln V.
    loss = _initial_loss(tied_init)
    assert abs(loss - math.log(V)) / math.log(V) < 0.10, loss
    if tied_init == "ln_vocab":
        assert loss == pytest.approx(_bigram_prediction(math.log(V) / D), rel=0.03)


def test_init_of_each_option():
    torch.manual_seed(0)
    cfg = dict(vocab_size=320, d_model=64, n_layers=1, n_heads=4, tie_embeddings=True)
    embed = ModelConfig.from_dict({**cfg, "tied_init": "ln_vocab"}).build().embed.weight
    assert embed.std().item() == pytest.approx(math.log(320) / 64, rel=0.03)
    projection = ModelConfig(**cfg, tied_init=ProjectionTiedInit()).build().head_projection.weight
    torch.testing.assert_close(projection @ projection.T, torch.eye(64), atol=1e-5, rtol=0)
    model = ModelConfig(**cfg, tied_init=HalfSwapTiedInit()).build()
    h = torch.randn(2, 3, 64)
    swapped = model.head_projection(h)
    assert torch.equal(swapped[..., :32], h[..., 32:]) and torch.equal(swapped[..., 32:], h[..., :32])


@pytest.mark.parametrize("tied_init", OPTIONS)
def test_counting_equals_built_model(tied_init):
    cfg = ModelConfig.from_dict(dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, tie_embeddings=True,
                                     tied_init=tied_init))
    model = cfg.build()
    groups = param_groups(cfg)
    assert groups.total == sum(p.numel() for p in model.parameters())
    assert groups.head_projection == (64 * 64 if tied_init == "projection" else 0)
    assert groups.non_embedding == groups.total - model.embed.weight.numel()
    extra = flops_per_token(cfg, 32).matmul_params - flops_per_token(ModelConfig(
        vocab_size=320, d_model=64, n_layers=2, n_heads=4, tie_embeddings=True), 32).matmul_params
    assert extra == groups.head_projection


def test_remedies_need_tied_embeddings():
    with pytest.raises(ConfigError, match="tied_init"):
        ModelConfig(vocab_size=320, tied_init=HalfSwapTiedInit())
    with pytest.raises(ConfigError, match="tied_init"):
        ModelConfig.from_dict({"vocab_size": 320, "tied_init": "ln_vocab"})


@pytest.mark.parametrize("tied_init", OPTIONS)
def test_checkpoint_keys_and_older_config_forms(tied_init):
    """Runs written before tied_init was a variant family hold `"tied_init": "<kind>"` in config.json and, for
    projection, the tensor `head_projection.weight`: both still load; `--set model.tied_init=<kind>` works."""
    shape = dict(vocab_size=320, d_model=64, n_layers=1, n_heads=4, tie_embeddings=True)
    cfg = ModelConfig.from_dict({**shape, "tied_init": tied_init})
    assert cfg.tied_init == TiedInit.from_dict({"kind": tied_init})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    plain = set(ModelConfig(**shape).build().state_dict())
    keys = set(cfg.build().state_dict())
    assert keys == plain | ({"head_projection.weight"} if tied_init == "projection" else set())
    from isoflop.train.spec import ExperimentConfig

    data = apply_overrides(ExperimentConfig().to_dict(), ["model.tie_embeddings=true", f"model.tied_init={tied_init}"],
                           ExperimentConfig)
    assert ExperimentConfig.from_dict(data).model.tied_init.kind == tied_init


def test_a_run_whose_config_holds_the_older_form_resumes(tmp_path):
    from isoflop.rundir import RunDir
    from isoflop.train.run import saved_config
    from isoflop.train.spec import ExperimentConfig

    old = ExperimentConfig().to_dict()
    old["model"].update(tie_embeddings=True, tied_init="projection")  # as runs wrote it before the family
    run = RunDir(tmp_path)
    run.write_config(old)
    run.check_start(ExperimentConfig.from_dict(old).to_dict(), resume=True, normalize=saved_config)
    other = ExperimentConfig.from_dict({**old, "model": {**old["model"], "tied_init": "half_swap"}})
    with pytest.raises(ConfigError, match="different config"):
        run.check_start(other.to_dict(), resume=True, normalize=saved_config)


@pytest.mark.parametrize("over,key", [({"tied_init": "projection"}, "model.tied_init"),
                                      ({"tied_init": "half_swap"}, "model.tied_init"),
                                      ({"layout": {"kind": "hwfa"}, "train_length": 16}, "model.layout.kind"),
                                      ({"layout": {"kind": "hwfa2", "window": 4}}, "model.layout.kind")])
def test_hf_export_refuses_what_llama_cannot_hold(tmp_path, over, key):
    cfg = ModelConfig.from_dict(dict(vocab_size=128, d_model=32, n_layers=2, n_heads=2, tie_embeddings=True, **over))
    with pytest.raises(ConfigError) as e:
        export_llama(cfg, cfg.build().state_dict(), tmp_path / "out", max_position_embeddings=64)
    assert e.value.key == key
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tied_init", ["normal", "ln_vocab"])
def test_hf_export_of_the_pure_inits_gives_transformers_equal_logits(tmp_path, tied_init):
    """`normal` and `ln_vocab` only change the init, so a tied LlamaForCausalLM computes the same logits."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(dict(vocab_size=128, d_model=32, n_layers=1, n_heads=2, tie_embeddings=True,
                                     tied_init=tied_init))
    model = cfg.build().eval()
    export_llama(cfg, model.state_dict(), tmp_path / "out", max_position_embeddings=64)
    hf_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    tokens = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(input_ids=tokens).logits, model(tokens), atol=1e-5, rtol=0)
