"""The dense model against naive references and its invariants."""

from __future__ import annotations

import math

import pytest
import torch

from isoflop.nn.config import ModelConfig
from isoflop.nn.generate import generate
from isoflop.nn.rope import DefaultRope
from isoflop.nn.rotary import Rotary, apply_rotary

CFG = dict(vocab_size=97, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2)


def _model(**over):
    torch.manual_seed(0)
    return ModelConfig(**{**CFG, **over}).build().eval()


def test_logits_shape_and_initial_loss_near_ln_v():
    model = _model()
    tokens = torch.randint(0, 97, (3, 11))
    logits = model(tokens)
    assert logits.shape == (3, 11, 97)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    assert abs(loss.item() - math.log(97)) < 0.1


@pytest.mark.parametrize("tied", [False, True])
def test_causal(tied):
    model = _model(tie_embeddings=tied)
    tokens = torch.randint(0, 97, (2, 16))
    changed = tokens.clone()
    changed[:, 9:] = torch.randint(0, 97, (2, 7))
    assert torch.allclose(model(tokens)[:, :9], model(changed)[:, :9], atol=1e-6)


def test_attention_equals_naive_masked_softmax():
    torch.manual_seed(1)
    model = _model()
    attn = model.layers[0].attention
    x = torch.randn(2, 7, 64)
    cos, sin = model.rotary(0, 7)
    q = apply_rotary(attn.q_proj(x).view(2, 7, 4, 16).transpose(1, 2), cos, sin)
    k = apply_rotary(attn.k_proj(x).view(2, 7, 2, 16).transpose(1, 2), cos, sin).repeat_interleave(2, dim=1)
    v = attn.v_proj(x).view(2, 7, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
    scores = (q @ k.transpose(-1, -2)) / 4.0
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    expected = attn.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 64))
    assert torch.allclose(attn(x, cos, sin), expected, atol=1e-6)


def test_rope_rotation_matches_explicit_matrices_and_is_relative():
    head_dim = 8
    rot = Rotary(DefaultRope(theta=100.0), head_dim)
    inv = rot.inv_freq
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def rotate(x, pos):  # explicit 2x2 rotation of each (i, i + d/2) pair
        out = x.clone()
        for i in range(head_dim // 2):
            a = pos * inv[i]
            out[i] = x[i] * torch.cos(a) - x[i + head_dim // 2] * torch.sin(a)
            out[i + head_dim // 2] = x[i] * torch.sin(a) + x[i + head_dim // 2] * torch.cos(a)
        return out

    cos, sin = rot(0, 12)
    for pos in (0, 3, 11):
        got = apply_rotary(q.view(1, 1, 1, -1), cos[pos:pos + 1], sin[pos:pos + 1]).flatten()
        assert torch.allclose(got, rotate(q, pos), atol=1e-5)
    score = lambda m, n: apply_rotary(q.view(1, 1, 1, -1), cos[m:m + 1], sin[m:m + 1]).flatten() @ \
        apply_rotary(k.view(1, 1, 1, -1), cos[n:n + 1], sin[n:n + 1]).flatten()  # noqa: E731
    assert torch.allclose(score(5, 2), score(11, 8), atol=1e-5)


def test_init_is_documented_one():
    model = _model(n_layers=8, d_model=256, n_heads=4, vocab_size=1000)
    std = model.cfg.init_std
    assert abs(model.layers[0].attention.q_proj.weight.std().item() - std) < 0.002
    assert abs(model.layers[0].ffn.down_proj.weight.std().item() - std / 4) < 0.001  # sqrt(2 * 8) = 4
    assert torch.equal(model.norm.weight, torch.ones(256))


def test_tied_head_shares_the_embedding():
    model = _model(tie_embeddings=True)
    assert model.lm_head.weight is model.embed.weight


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_equals_full_recompute(temperature):
    model = _model()
    prompt = torch.randint(0, 97, (2, 5))
    with_cache = generate(model, prompt, 25, temperature=temperature, top_k=20,
                          generator=torch.Generator().manual_seed(3))
    without = generate(model, prompt, 25, temperature=temperature, top_k=20,
                       generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(with_cache, without)


def test_chunked_prefill_with_cache_equals_full_forward():
    model = _model()
    tokens = torch.randint(0, 97, (1, 12))
    cache = model.new_cache(1, 12)
    parts = [model(tokens[:, :5], cache), model(tokens[:, 5:9], cache), model(tokens[:, 9:], cache)]
    assert torch.allclose(torch.cat(parts, dim=1), model(tokens), atol=1e-5)


def test_vocab_limit_never_samples_padding_rows():
    model = _model()
    with torch.no_grad():
        model.lm_head.weight[90:] += 5.0  # make the padding rows the likeliest
    out = generate(model, torch.zeros(1, 1, dtype=torch.long), 30, generator=torch.Generator().manual_seed(0),
                   vocab_limit=90)
    assert int(out.max()) < 90
