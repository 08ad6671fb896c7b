"""Causality of whole models: perturbing tokens after t must not change logits at <= t, and cached greedy
decoding must equal full recomputation. MoD's training-mode top-k is expected to fail the first
(it looks at later tokens); its causal rule (predictor or router BCE) must pass both."""

from __future__ import annotations

import pytest
import torch

from isoflop.nn.config import ModelConfig
from isoflop.nn.ffn_config import MoEFFN, SigmoidBias
from isoflop.nn.generate import generate
from isoflop.nn.mod_config import TopKMoD

V, T, CUT = 64, 24, 11


def _model(mod=None, seed: int = 0, ffn=None):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2,
                      **({"mod": mod} if mod is not None else {}), **({"ffn": ffn} if ffn is not None else {}))
    model = cfg.build().eval()
    # A trained router spreads its outputs; at init they are tiny. Widen them so the routing decisions are
    # varied (some tokens in, some out) and the contributions r * f are not negligible.
    for name, p in model.named_parameters():
        if name.endswith(("router.weight", "predictor.2.weight", "ffn.gate.weight")):
            p.data.mul_(50.0)
    return model


def _max_change_before_cut(model, seeds=range(4)) -> float:
    """The largest change of logits at positions <= CUT when tokens after CUT are redrawn."""
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (2, T), generator=gen)
    with torch.no_grad():
        base = model(tokens)[:, :CUT + 1]
        worst = 0.0
        for _ in seeds:
            changed = tokens.clone()
            changed[:, CUT + 1:] = torch.randint(0, V, (2, T - CUT - 1), generator=gen)
            worst = max(worst, float((model(changed)[:, :CUT + 1] - base).abs().max()))
    return worst


def test_dense_model_is_causal():
    assert _max_change_before_cut(_model()) <= 1e-6


def test_mod_training_mode_is_not_causal():
    model = _model(TopKMoD(capacity=0.25))
    assert model.non_causal_reason() is None  # a causal rule exists, but training mode does not use it
    assert _max_change_before_cut(model) > 1e-4


CAUSAL_RULES = [TopKMoD(capacity=0.25, predictor=True), TopKMoD(capacity=0.25, predictor=False, aux_bce_weight=0.1)]


@pytest.mark.parametrize("mod", CAUSAL_RULES, ids=["predictor", "router_bce"])
def test_mod_causal_routing_is_causal(mod):
    model = _model(mod)
    model.use_causal_routing(True)
    assert _max_change_before_cut(model) <= 1e-6
    fractions = [v for k, v in model.routing_stats().items() if k.endswith("selected_fraction")]
    assert fractions and all(0.05 < f < 0.95 for f in fractions)  # the test exercises real routing decisions


MOE = MoEFFN(experts=4, top_k=2, expert_hidden=48)  # dropless token choice: causal
MOE_SIGMOID_NOOP = MoEFFN(experts=5, top_k=2, noop_experts=1, shared_experts=1, expert_hidden=48,
                          router=SigmoidBias())


@pytest.mark.parametrize("mod, ffn", [(None, None), *((m, None) for m in CAUSAL_RULES), (None, MOE),
                                      (None, MOE_SIGMOID_NOOP), (CAUSAL_RULES[0], MOE)],
                         ids=["dense", "predictor", "router_bce", "moe", "moe_sigmoid_noop", "staged_mode"])
def test_cached_greedy_decode_equals_full_recompute(mod, ffn):
    model = _model(mod, ffn=ffn)
    model.use_causal_routing(True)
    prompt = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(2))
    cached = generate(model, prompt, 16, temperature=0.0, use_cache=True)
    recomputed = generate(model, prompt, 16, temperature=0.0, use_cache=False)
    assert torch.equal(cached, recomputed)
    if mod is not None or ffn is not None:  # and the cached logits themselves agree with one full forward
        cache = model.new_cache(3, cached.shape[1])
        step_logits = [model(cached[:, :5], cache)[:, -1]]
        step_logits += [model(cached[:, t:t + 1], cache)[:, -1] for t in range(5, cached.shape[1] - 1)]
        full = model(cached[:, :-1])[:, 4:]
        torch.testing.assert_close(torch.stack(step_logits, dim=1), full, atol=1e-5, rtol=1e-5)


def test_mod_without_causal_rule_reports_why():
    model = _model(TopKMoD(predictor=False, aux_bce_weight=0.0))
    assert "cannot sample" in model.non_causal_reason()


def test_routed_blocks_cache_only_their_routed_tokens():
    """Reference §6.4.7: with a KV cache a routed block keeps keys and values of the tokens its causal rule
    routes, per sequence, and no others; the counts come from one full forward of the same tokens."""
    from isoflop.nn.mod import RoutedBlock

    model = _model(CAUSAL_RULES[0])
    model.use_causal_routing(True)
    tokens_BT = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(3))
    routed = [m for m in model.modules() if isinstance(m, RoutedBlock)]
    counts: dict[int, list[int]] = {}
    hooks = [block.register_forward_pre_hook(
        lambda module, args, i=i: counts.__setitem__(i, module.routed_causally(
            args[0], module.router(args[0]).squeeze(-1)).sum(dim=1).tolist())) for i, block in enumerate(routed)]
    with torch.no_grad():
        model(tokens_BT)
        for hook in hooks:
            hook.remove()
        cache = model.new_cache(3, T)
        model(tokens_BT[:, :5], cache)
        for t in range(5, T):
            model(tokens_BT[:, t:t + 1], cache)
    for i, block in enumerate(routed):
        assert [c.length for c in block._decode_caches[cache]] == counts[i]
        assert all(0 < n < T for n in counts[i])  # compact: some tokens routed, not all
