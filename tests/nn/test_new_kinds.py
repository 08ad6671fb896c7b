"""Adding a kind is one class in one file: a new RoPE kind and a new router kind, each written here as a single
class and nothing else edited, build into a model, train through the real trainer, count their parameters and
FLOPs as the built model and torch's flop counter do, and answer export themselves (a refusal naming the key).

Each class is defined inside a fixture that lends its family a copy of the kind registry, so the kind exists
for that test only (a module-level class would stay registered for the whole session and show up in the other
tests' lists of kinds); a library kind is the same class at module level of its own file.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from isoflop.config import ConfigError, config
from isoflop.interop.hf_moe import export_hf
from isoflop.nn import attention as attention_module
from isoflop.nn.config import ModelConfig
from isoflop.nn.counting import param_groups
from isoflop.nn.ffn_config import RouterConfig
from isoflop.nn.generate import generate
from isoflop.nn.rope import RopeConfig
from isoflop.nn.rotary import Rotary, apply_rotary
from isoflop.registry import Registry
from isoflop.rundir import RunDir
from tests.conftest import tiny_overrides
from tests.nn.test_counting import _naive_sdpa
from tests.nn.test_moe import _assert_counted_flops_match_the_counter

SHAPE = dict(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64)


def _lend_registry(monkeypatch: pytest.MonkeyPatch, family: type) -> None:
    """Kinds defined until the test ends register into a copy of `family`'s registry, dropped afterwards."""
    members = family._members
    monkeypatch.setattr(family, "_members", Registry(members.noun, dict(members.items()), unknown=members.unknown,
                                                     sort_choices=members.sort_choices))


@pytest.fixture
def p_rope(monkeypatch: pytest.MonkeyPatch) -> type[RopeConfig]:
    _lend_registry(monkeypatch, RopeConfig)

    # ------------------------------------------------------------------ the new kind: this class is all of it
    @config
    class PartialRope(RopeConfig):
        """p-RoPE (Barbero et al. 2024, arXiv 2410.06205): only the `fraction` of the pairs with the highest
        frequencies rotate; the lowest-frequency pairs get frequency 0 and carry no position (NoPE channels).
        transformers has no such rope_type, so it keeps the base class's answer to export: a refusal."""

        kind = "p_rope"
        fraction: float = 0.75
        """The share of the head_dim / 2 pairs that rotate (the highest frequencies)."""

        def inv_freq(self, head_dim: int, seq_len: int | None = None) -> list[float]:
            pairs = head_dim // 2
            rotating = round(self.fraction * pairs)
            return [self.theta ** (-(2 * i) / head_dim) if i < rotating else 0.0 for i in range(pairs)]

    return PartialRope


@pytest.fixture
def sigmoid_topk(monkeypatch: pytest.MonkeyPatch) -> type[RouterConfig]:
    _lend_registry(monkeypatch, RouterConfig)

    # ------------------------------------------------------------------ the new kind: this class is all of it
    @config
    class SigmoidTopK(RouterConfig):
        """Sigmoid scores; each token takes its top-k experts by score, gated by the raw scores (no bias, no
        renormalisation). The balance loss averages the scores normalised per token. Token choice, so causal;
        no Hugging Face MoE class gates this way, so it keeps the base class's answer to export: a refusal."""

        kind = "sigmoid_topk"

        def route(self, logits_NE, *, top_k, capacity_factor=None, selection_bias_E=None):
            from isoflop.nn import routers

            scores_NE = logits_NE.sigmoid()
            gate_NK, idx_NK = scores_NE.topk(top_k, dim=-1)
            routing = routers.token_choice_routing(idx_NK, gate_NK, scores_NE / scores_NE.sum(-1, keepdim=True))
            return routers.apply_capacity(routing, logits_NE, top_k, capacity_factor)

    return SigmoidTopK


def _train_one_step(cfg: ModelConfig) -> tuple[float, float]:
    """Loss before and after one AdamW step on a fixed batch (aux losses included)."""
    torch.manual_seed(0)
    model = cfg.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, cfg.vocab_size, (4, 33), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        aux = model.aux_loss()
        losses.append(loss.item())
        optimizer.zero_grad()
        (loss + (aux if aux is not None else 0)).backward()
        optimizer.step()
        model.after_optimizer_step()
    return losses[0], losses[1]


def _run(tmp_path, corpus_dir, overrides: list[str]):
    """A 2-step tiny run with `overrides`: (its config.json, its train records, the model loaded back)."""
    from isoflop.cli.common import load_experiment
    from isoflop.train.artifacts import load_model
    from isoflop.train.run import run_training

    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, steps=2) + ["eval.every=0", *overrides])
    with open(os.devnull, "w") as devnull:
        run_training(cfg, tmp_path / "run", stream=devnull)
    run = RunDir(tmp_path / "run")
    saved, train = run.read_config(), run.metrics.train_records()
    assert len(train) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in train), train
    return saved, train, load_model(tmp_path / "run")


# ----------------------------------------------------------------------------- the RoPE kind


def test_new_rope_kind_rotates_only_its_pairs_and_keeps_scores_relative(p_rope) -> None:
    rope = RopeConfig.from_dict({"kind": "p_rope", "fraction": 0.5})
    assert type(rope) is p_rope and "p_rope" in RopeConfig.kinds()
    rotary = Rotary(rope, 16)
    cos, sin = rotary(0, 40)
    assert torch.equal(cos[:, 4:8], torch.ones(40, 4)) and torch.equal(sin[:, 4:8], torch.zeros(40, 4))
    assert not torch.allclose(cos[1:, :4], torch.ones(39, 4))
    q, k = torch.randn(16, generator=torch.Generator().manual_seed(0)), torch.randn(16)
    q_T = apply_rotary(q.expand(1, 1, 40, 16), cos, sin)[0, 0]
    k_T = apply_rotary(k.expand(1, 1, 40, 16), cos, sin)[0, 0]
    scores = q_T @ k_T.T
    for offset in (-7, 0, 5):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-5, rtol=0)


def test_new_rope_kind_builds_trains_and_counts(p_rope, monkeypatch) -> None:
    cfg = ModelConfig.from_dict({**SHAPE, "rope": {"kind": "p_rope", "fraction": 0.5}})
    model = cfg.build()
    assert torch.equal(model.rotary.inv_freq[4:], torch.zeros(4))
    assert param_groups(cfg).total == sum(p.numel() for p in model.parameters())
    before, after = _train_one_step(cfg)
    assert after < before
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    _assert_counted_flops_match_the_counter(cfg)


def test_new_rope_kind_through_the_trainer_and_export(p_rope, tmp_path, corpus_dir, cache_dir) -> None:
    saved, _, model = _run(tmp_path, corpus_dir, ["model.rope=p_rope", "model.rope.fraction=0.5"])
    assert saved["model"]["rope"] == {"kind": "p_rope", "log_n_length": None, "theta": 10000.0, "fraction": 0.5}
    assert type(model.cfg.rope) is p_rope and torch.equal(model.rotary.inv_freq[4:], torch.zeros(4))
    with pytest.raises(ConfigError, match="^model.rope.kind: no Llama rope_parameters mapping for 'p_rope'"):
        export_hf(model.cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=32)
    assert not (tmp_path / "hf").exists()


# ----------------------------------------------------------------------------- the router kind


def _moe(router: dict | None = None, **ffn) -> ModelConfig:
    return ModelConfig.from_dict({**SHAPE, "ffn": {"kind": "moe", "experts": 4, "top_k": 2,
                                                   "router": router or {"kind": "sigmoid_topk"}, **ffn}})


def test_new_router_kind_equals_its_per_token_definition(sigmoid_topk) -> None:
    torch.manual_seed(3)
    model = _moe().build()
    layer = model.layers[0].ffn
    assert type(layer.cfg.router) is sigmoid_topk
    for p in layer.parameters():  # wide enough that the choices are far from ties
        torch.nn.init.normal_(p, 0.0, 0.5)
    x_ND = torch.randn(10, 64)
    expected = []
    for x_D in x_ND:  # the rule, token by token
        scores_E = (layer.router_weight() @ x_D).sigmoid()
        y_D = torch.zeros(64)
        for e in scores_E.topk(2).indices.tolist():
            e_ = layer.experts
            y_D = y_D + scores_E[e] * (e_.down_proj[e] @ (F.silu(e_.gate_proj[e] @ x_D) * (e_.up_proj[e] @ x_D)))
        expected.append(y_D)
    torch.testing.assert_close(layer(x_ND.view(2, 5, 64)).view(10, 64), torch.stack(expected), atol=1e-4, rtol=1e-4)
    assert layer.aux_loss is not None and "balance_loss" in layer.stats


def test_new_router_kind_builds_trains_counts_and_samples(sigmoid_topk, monkeypatch) -> None:
    cfg = _moe(every=2, capacity_factor=1.5)
    model = cfg.build()
    groups = param_groups(cfg)
    assert groups.total == sum(p.numel() for p in model.parameters())
    expert = 3 * 64 * 64
    assert groups.total - groups.active == 2 * expert  # 4 experts, a token meets top_k = 2 of them
    before, after = _train_one_step(_moe())
    assert after < before
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _naive_sdpa)
    _assert_counted_flops_match_the_counter(_moe(every=2))
    dropless = _moe().build().eval()
    assert dropless.non_causal_reason() is None  # token choice: it samples
    prompt = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(2))
    assert torch.equal(generate(dropless, prompt, 8, temperature=0.0),
                       generate(dropless, prompt, 8, temperature=0.0, use_cache=False))
    assert "capacity_factor" in model.non_causal_reason()  # the MoE layer's own rule still applies


def test_new_router_kind_through_the_trainer_and_export(sigmoid_topk, tmp_path, corpus_dir, cache_dir) -> None:
    overrides = ["model.ffn.kind=moe", "model.ffn.experts=4", "model.ffn.top_k=2", "model.ffn.router.kind=sigmoid_topk"]
    saved, train, model = _run(tmp_path, corpus_dir, overrides)
    assert saved["model"]["ffn"]["router"] == {"kind": "sigmoid_topk"}
    assert all(r["aux_loss"] > 0 and "0.ffn.balance_loss" in r and "1.ffn.load_max_over_mean" in r for r in train)
    with pytest.raises(ConfigError, match="^model.ffn.router.kind: .*no Hugging Face class holds 'sigmoid_topk'"):
        export_hf(model.cfg, model.state_dict(), tmp_path / "hf", max_position_embeddings=32)
    assert not (tmp_path / "hf").exists()
