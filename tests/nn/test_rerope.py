"""ReRoPE and Leaky ReRoPE against a brute-force score matrix, their limits (plain RoPE), cached decoding with
unrotated keys, causality, and log-n query scaling."""

from __future__ import annotations

import math

import pytest
import torch

from isoflop.config import ConfigError
from isoflop.nn.attention import Attention
from isoflop.nn.config import ModelConfig
from isoflop.nn.generate import generate
from isoflop.nn.rerope import ReRopeAttention
from isoflop.nn.rope import DefaultRope, RopeConfig
from isoflop.nn.rope_clipped import LeakyReRope, ReRope
from isoflop.nn.rotary import Rotary

CFG = dict(vocab_size=97, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2)
HEAD_DIM, HEADS, KV_HEADS = 16, 4, 2


def _model(rope: RopeConfig, **over) -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelConfig(**{**CFG, "rope": rope, **over}).build().eval()


def _rotate(x: torch.Tensor, position: float, inv_freq: torch.Tensor) -> torch.Tensor:
    """Explicit 2x2 rotation of each (i, i + H/2) pair of a (H,) vector by position * inv_freq[i], float64."""
    x, half = x.double(), x.shape[-1] // 2
    angle = position * inv_freq.double()
    out = x.clone()
    out[:half] = x[:half] * angle.cos() - x[half:] * angle.sin()
    out[half:] = x[:half] * angle.sin() + x[half:] * angle.cos()
    return out


def _brute_force(attn: Attention, x_BTD: torch.Tensor, rope: RopeConfig) -> torch.Tensor:
    """Attention whose score (i, j) rotates q_i by the clipped relative position r(i - j) against an unrotated
    k_j ((R^r q) . k = (R^i q) . (R^j k) when r = i - j), built entry by entry; log-n scales q_i."""
    B, T, _ = x_BTD.shape
    inv_freq = torch.tensor(rope.inv_freq(HEAD_DIM), dtype=torch.float64)
    q = attn.q_proj(x_BTD).view(B, T, HEADS, HEAD_DIM).double()
    k = attn.k_proj(x_BTD).view(B, T, KV_HEADS, HEAD_DIM).double()
    v = attn.v_proj(x_BTD).view(B, T, KV_HEADS, HEAD_DIM).double()
    y = torch.zeros(B, T, HEADS, HEAD_DIM, dtype=torch.float64)
    for b in range(B):
        for n in range(HEADS):
            kv = n // (HEADS // KV_HEADS)
            for i in range(T):
                q_i = q[b, i, n] * rope.query_scale(i)
                scores = torch.full((T,), float("-inf"), dtype=torch.float64)
                for j in range(i + 1):
                    r = rope.relative_position(i - j) if isinstance(rope, ReRope) else i - j
                    scores[j] = _rotate(q_i, r, inv_freq) @ k[b, j, kv] / math.sqrt(HEAD_DIM)
                y[b, i, n] = scores.softmax(-1) @ v[b, :, kv]
    return attn.o_proj(y.reshape(B, T, HEADS * HEAD_DIM).float())


ROPES = [
    ReRope(theta=100.0, window=3),
    ReRope(theta=100.0, window=5, log_n_length=4),
    LeakyReRope(theta=100.0, window=3, k=4.0),
    LeakyReRope(theta=100.0, window=2, k=2.5, log_n_length=6),
]


@pytest.mark.parametrize("rope", ROPES, ids=lambda r: f"{r.kind}-w{r.window}-logn{r.log_n_length}")
def test_prefill_equals_brute_force_score_matrix(rope: ReRope) -> None:
    model = _model(rope)
    attn = model.layers[0].attention
    assert isinstance(attn, ReRopeAttention)
    x = torch.randn(2, 11, 64, generator=torch.Generator().manual_seed(1))
    cos, sin = model.rotary(0, 11)
    got = attn(x, cos, sin, q_scale_T1=model.rotary.query_scale(0, 11))
    torch.testing.assert_close(got, _brute_force(attn, x, rope), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("rope", ROPES, ids=lambda r: f"{r.kind}-w{r.window}-logn{r.log_n_length}")
def test_cached_decode_and_chunks_equal_prefill(rope: ReRope) -> None:
    model = _model(rope)
    tokens = torch.randint(0, 97, (2, 14), generator=torch.Generator().manual_seed(2))
    full = model(tokens)
    cache = model.new_cache(2, 14)
    rows = [model(tokens[:, :5], cache), model(tokens[:, 5:9], cache)]  # a prefill, then a chunk after it
    rows += [model(tokens[:, t:t + 1], cache) for t in range(9, 14)]  # one-token decoding, one pass
    torch.testing.assert_close(torch.cat(rows, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.keys[0, :, :, :14], _unrotated_keys(model, tokens), atol=1e-6, rtol=1e-6)


def _unrotated_keys(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Layer 0's keys as projected, before any rotation: what the ReRoPE cache must hold."""
    layer = model.layers[0]
    x = layer.attention_norm(model.embed(tokens))
    return layer.attention.k_proj(x).view(2, tokens.shape[1], KV_HEADS, HEAD_DIM).transpose(1, 2)


@pytest.mark.parametrize("rope", [ReRope(theta=100.0, window=3), LeakyReRope(theta=100.0, window=4, k=3.0)],
                         ids=lambda r: r.kind)
def test_generate_with_and_without_cache_gives_the_same_tokens(rope: ReRope) -> None:
    model = _model(rope)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    cached = generate(model, prompt, 12, temperature=0.0)
    uncached = generate(model, prompt, 12, temperature=0.0, use_cache=False)
    assert torch.equal(cached, uncached)
    sampled = [generate(model, prompt, 12, generator=torch.Generator().manual_seed(4), use_cache=use)
               for use in (True, False)]
    assert torch.equal(sampled[0], sampled[1])


@pytest.mark.parametrize("rope", [ReRope(theta=100.0, window=16), LeakyReRope(theta=100.0, window=16, k=8.0),
                                  LeakyReRope(theta=100.0, window=2, k=1.0)],
                         ids=["rerope-wide-window", "leaky-wide-window", "leaky-k1"])
def test_limits_are_plain_rope(rope: ReRope) -> None:
    """A window at least the sequence length, or Leaky with k = 1, gives kind=default's logits, cached too."""
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(5))
    plain = _model(DefaultRope(theta=100.0))
    model = _model(rope)
    torch.testing.assert_close(model(tokens), plain(tokens), atol=1e-5, rtol=1e-5)
    cache = model.new_cache(2, 16)
    model(tokens[:, :10], cache)
    torch.testing.assert_close(model(tokens[:, 10:11], cache), plain(tokens[:, :11])[:, 10:], atol=1e-5, rtol=1e-5)


def test_small_window_differs_from_plain_rope_beyond_it() -> None:
    tokens = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(6))
    plain, model = _model(DefaultRope(theta=100.0))(tokens), _model(ReRope(theta=100.0, window=4))(tokens)
    torch.testing.assert_close(model[:, :4], plain[:, :4], atol=1e-5, rtol=1e-5)  # distances < w only
    assert not torch.allclose(model[:, 4:], plain[:, 4:], atol=1e-3)


@pytest.mark.parametrize("rope", [ReRope(theta=100.0, window=3), LeakyReRope(theta=100.0, window=3, k=4.0),
                                  DefaultRope(theta=100.0, log_n_length=5)], ids=lambda r: r.kind)
def test_causal(rope: RopeConfig) -> None:
    model = _model(rope)
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(7))
    changed = tokens.clone()
    changed[:, 9:] = torch.randint(0, 97, (2, 7))
    assert torch.allclose(model(tokens)[:, :9], model(changed)[:, :9], atol=1e-6)


def test_plain_kinds_keep_sdpa_attention() -> None:
    model = _model(DefaultRope(theta=100.0, log_n_length=8))
    assert all(type(layer.attention) is Attention for layer in model.layers)


# ----------------------------------------------------------------------------- log-n scaling


def test_log_n_factor_is_one_up_to_the_length_and_exact_beyond() -> None:
    length = 8
    rope = DefaultRope(theta=100.0, log_n_length=length)
    scale = Rotary(rope, HEAD_DIM).query_scale(0, 40).flatten()
    assert torch.equal(scale[:length], torch.ones(length))
    expected = torch.tensor([math.log(p + 1) / math.log(length) for p in range(length, 40)], dtype=torch.float32)
    torch.testing.assert_close(scale[length:], expected, rtol=1e-6, atol=0)
    assert [rope.query_scale(p) for p in range(length)] == [1.0] * length
    assert rope.query_scale(63) == pytest.approx(2.0)  # ln 64 / ln 8
    torch.testing.assert_close(Rotary(rope, HEAD_DIM).query_scale(30, 5).flatten(), expected[22:27])
    assert Rotary(DefaultRope(), HEAD_DIM).query_scale(0, 40) is None


def test_log_n_attention_scales_the_queries_exactly() -> None:
    rope = DefaultRope(theta=100.0, log_n_length=4)
    model = _model(rope)
    attn = model.layers[0].attention
    x = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(attn(x, *model.rotary(0, 10), q_scale_T1=model.rotary.query_scale(0, 10)),
                               _brute_force(attn, x, rope), atol=2e-6, rtol=1e-5)


def test_log_n_leaves_positions_up_to_the_length_unchanged() -> None:
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(9))
    plain = _model(DefaultRope(theta=100.0))(tokens)
    scaled_model = _model(DefaultRope(theta=100.0, log_n_length=6))
    scaled = scaled_model(tokens)
    torch.testing.assert_close(scaled[:, :6], plain[:, :6], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(scaled[:, 6:], plain[:, 6:], atol=1e-4)
    assert torch.equal(_model(DefaultRope(theta=100.0, log_n_length=12))(tokens), plain)
    cache = scaled_model.new_cache(2, 12)
    rows = [scaled_model(tokens[:, :7], cache)] + [scaled_model(tokens[:, t:t + 1], cache) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(rows, dim=1), scaled, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- configs and export


def test_relative_positions() -> None:
    assert [ReRope(window=3).relative_position(d) for d in range(6)] == [0, 1, 2, 3, 3, 3]
    assert [LeakyReRope(window=3, k=2.0).relative_position(d) for d in range(6)] == [0, 1, 2, 3, 3.5, 4.0]
    assert LeakyReRope(window=3, k=1.0).relative_position(10) == 10
    assert ReRope(window=3).clipped_window() == (3, 0.0) and LeakyReRope(window=3, k=4.0).clipped_window() == (3, 0.25)
    assert DefaultRope().clipped_window() is None


@pytest.mark.parametrize(("kind", "data", "key"), [
    ("rerope", {"window": 0}, "window"),
    ("leaky_rerope", {"k": 0.5}, "k"),
    ("rerope", {"theta": 1.0}, "theta"),
    ("default", {"log_n_length": 1}, "log_n_length"),
    ("yarn", {"log_n_length": 0}, "log_n_length"),
])
def test_bad_values_are_refused(kind: str, data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        RopeConfig.from_dict({"kind": kind, **data})
    assert e.value.key == key


@pytest.mark.parametrize("rope", [ReRope(window=4, log_n_length=64), LeakyReRope(window=4, k=8.0)],
                         ids=lambda r: r.kind)
def test_configs_round_trip(rope: ReRope) -> None:
    assert RopeConfig.from_dict(rope.to_dict()) == rope


@pytest.mark.parametrize("rope", [ReRope(window=4), LeakyReRope(window=4, k=8.0),
                                  DefaultRope(log_n_length=64)], ids=lambda r: r.kind)
def test_hf_export_refuses(tmp_path, rope: RopeConfig) -> None:
    pytest.importorskip("transformers")
    from isoflop.interop.hf import export_llama

    model = _model(rope)
    with pytest.raises(ValueError, match="model.rope"):
        export_llama(model.cfg, model.state_dict(), tmp_path / "out", max_position_embeddings=64)
    assert not (tmp_path / "out").exists()
