"""RoPE kinds: frequencies and attention factors equal Hugging Face's ROPE_INIT_FUNCTIONS (transformers 5), scores
depend only on m - n, and only length-dependent kinds recompute frequencies in the rotary module."""

from __future__ import annotations

import pytest
import torch

from isoflop.config import ConfigError, field_docs
from isoflop.nn.rope import DefaultRope, LinearRope, NtkRope, RopeConfig
from isoflop.nn.rope_clipped import LeakyReRope, ReRope
from isoflop.nn.rope_scaled import DynamicNtkRope, Llama3Rope, YarnRope
from isoflop.nn.rotary import Rotary, apply_rotary

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

HEAD_DIMS, THETAS, FACTORS = (64, 128), (1e4, 5e5), (2.0, 4.0, 8.0, 16.0)
GRID = [(d, b, s) for d in HEAD_DIMS for b in THETAS for s in FACTORS]
RTOL = 1e-6  # HF computes in float32; ours in float64


def _hf_config(head_dim: int, rope_parameters: dict, max_position_embeddings: int = 4096):
    return transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                                    max_position_embeddings=max_position_embeddings,
                                    rope_parameters=dict(rope_parameters))


def _hf(head_dim: int, rope_parameters: dict, seq_len: int | None = None, max_position_embeddings: int = 4096):
    config = _hf_config(head_dim, rope_parameters, max_position_embeddings)
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](config, "cpu", seq_len=seq_len)
    return inv_freq, float(attention_factor)


def _hf_default(head_dim: int, theta: float) -> torch.Tensor:
    config = _hf_config(head_dim, {"rope_type": "default", "rope_theta": theta})
    inv_freq, _ = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding.compute_default_rope_parameters(
        config, device="cpu")
    return inv_freq


def _assert_freqs(ours: list[float], theirs: torch.Tensor) -> None:
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), theirs.double(), rtol=RTOL, atol=0)


# ----------------------------------------------------------------------------- parity with Hugging Face


@pytest.mark.parametrize(("head_dim", "theta"), [(d, b) for d in HEAD_DIMS for b in THETAS])
def test_default_is_unchanged_and_equals_hf(head_dim: int, theta: float) -> None:
    rope = DefaultRope(theta=theta)
    assert rope.inv_freq(head_dim) == [theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]
    assert rope.inv_freq(head_dim, 10 * 4096) == rope.inv_freq(head_dim)
    assert rope.attention_factor() == 1.0 and rope.rescale_beyond() is None
    _assert_freqs(rope.inv_freq(head_dim), _hf_default(head_dim, theta))


@pytest.mark.parametrize(("head_dim", "theta", "factor"), GRID)
def test_linear_equals_hf(head_dim: int, theta: float, factor: float) -> None:
    rope = LinearRope(theta=theta, factor=factor)
    inv_freq, attention = _hf(head_dim, {"rope_type": "linear", "rope_theta": theta, "factor": factor})
    _assert_freqs(rope.inv_freq(head_dim), inv_freq)
    assert rope.attention_factor() == attention == 1.0


@pytest.mark.parametrize(("head_dim", "theta", "factor"), GRID)
def test_static_ntk_equals_hf_default_with_scaled_base(head_dim: int, theta: float, factor: float) -> None:
    rope = NtkRope(theta=theta, factor=factor)
    scaled = theta * factor ** (head_dim / (head_dim - 2))
    assert rope.scaled_theta(head_dim) == scaled
    _assert_freqs(rope.inv_freq(head_dim), _hf_default(head_dim, scaled))
    assert rope.attention_factor() == 1.0


def test_static_ntk_reference_values() -> None:
    """Hand-computed from the base theta * s^(d/(d-2)) (bloc97 2023; Su, kexue.fm 9675): d = 128, theta = 1e4
    gives 1e4 * 4^(128/126) = 40,889.94 (s = 4) and 1e4 * 8^(128/126) = 82,684.62 (s = 8)."""
    assert NtkRope(theta=1e4, factor=4.0).scaled_theta(128) == pytest.approx(40889.94, abs=0.01)
    assert NtkRope(theta=1e4, factor=8.0).scaled_theta(128) == pytest.approx(82684.62, abs=0.01)


@pytest.mark.parametrize(("head_dim", "theta", "factor"), GRID)
@pytest.mark.parametrize("length", [2048, 4096])
def test_dynamic_equals_hf_at_several_lengths(head_dim: int, theta: float, factor: float, length: int) -> None:
    rope = DynamicNtkRope(theta=theta, factor=factor, original_max_position_embeddings=length)
    params = {"rope_type": "dynamic", "rope_theta": theta, "factor": factor}
    for seq_len in (None, length // 2, length, 2 * length, int(3.5 * length), 3 * length + 17):
        inv_freq, attention = _hf(head_dim, params, seq_len=seq_len, max_position_embeddings=length)
        _assert_freqs(rope.inv_freq(head_dim, seq_len), inv_freq)
        assert rope.attention_factor() == attention == 1.0
    assert rope.inv_freq(head_dim, length) == rope.inv_freq(head_dim) == rope.inv_freq(head_dim, length // 2)
    assert rope.inv_freq(head_dim) == pytest.approx(DefaultRope(theta=theta).inv_freq(head_dim), rel=1e-15)
    assert rope.rescale_beyond() == length


@pytest.mark.parametrize(("head_dim", "theta", "factor"), GRID)
@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize(("length", "beta_fast", "beta_slow"), [(4096, 32.0, 1.0), (2048, 16.0, 2.0)])
def test_yarn_equals_hf(head_dim: int, theta: float, factor: float, truncate: bool, length: int,
                        beta_fast: float, beta_slow: float) -> None:
    rope = YarnRope(theta=theta, factor=factor, original_max_position_embeddings=length, beta_fast=beta_fast,
                    beta_slow=beta_slow, truncate=truncate)
    inv_freq, attention = _hf(head_dim, {"rope_type": "yarn", "rope_theta": theta, "factor": factor,
                                         "original_max_position_embeddings": length, "beta_fast": beta_fast,
                                         "beta_slow": beta_slow, "truncate": truncate})
    _assert_freqs(rope.inv_freq(head_dim), inv_freq)
    assert rope.attention_factor() == pytest.approx(attention, rel=RTOL, abs=0)
    assert rope.inv_freq(head_dim, 10 * length) == rope.inv_freq(head_dim) and rope.rescale_beyond() is None


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("extra", [{"mscale": 1.0, "mscale_all_dim": 0.707}, {"mscale": 0.707, "mscale_all_dim": 1.0},
                                   {"attention_factor": 1.25}])
def test_yarn_attention_factor_variants_equal_hf(factor: float, extra: dict) -> None:
    params = {"rope_type": "yarn", "rope_theta": 1e4, "factor": factor, "original_max_position_embeddings": 4096}
    inv_freq, attention = _hf(64, params | extra)
    rope = YarnRope(theta=1e4, factor=factor, original_max_position_embeddings=4096,
                    mscale=extra.get("mscale"), mscale_all_dim=extra.get("mscale_all_dim"),
                    attention_factor_override=extra.get("attention_factor"))
    assert rope.attention_factor() == pytest.approx(attention, rel=RTOL, abs=0)
    _assert_freqs(rope.inv_freq(64), inv_freq)


def test_yarn_reference_values() -> None:
    """YaRN's attention factor sqrt(1/t) = 0.1 ln s + 1 (Peng et al. 2023, arXiv 2309.00071), by hand:
    1.1386 (s = 4), 1.2079 (s = 8), 1.2773 (s = 16)."""
    for factor, expected in ((4.0, 1.1386), (8.0, 1.2079), (16.0, 1.2773)):
        assert YarnRope(factor=factor).attention_factor() == pytest.approx(expected, abs=1e-4)
    # d = 128, b = 1e4, L = 4096: the ramp runs over pairs 20 .. 46 (truncated), so pair 20 is kept exactly
    # and pairs from 46 on are fully interpolated.
    rope = YarnRope(theta=1e4, factor=4.0, original_max_position_embeddings=4096)
    plain = DefaultRope(theta=1e4).inv_freq(128)
    ours = rope.inv_freq(128)
    assert ours[20] == pytest.approx(plain[20], rel=1e-12) and ours[21] < plain[21]
    assert ours[46] == pytest.approx(plain[46] / 4, rel=1e-12) and ours[45] > plain[45] / 4


@pytest.mark.parametrize(("head_dim", "theta", "factor"), GRID)
@pytest.mark.parametrize(("length", "low", "high"), [(8192, 1.0, 4.0), (4096, 2.0, 8.0), (1024, 1.0, 2.0)])
def test_llama3_equals_hf(head_dim: int, theta: float, factor: float, length: int, low: float, high: float) -> None:
    rope = Llama3Rope(theta=theta, factor=factor, low_freq_factor=low, high_freq_factor=high,
                      original_max_position_embeddings=length)
    inv_freq, attention = _hf(head_dim, {"rope_type": "llama3", "rope_theta": theta, "factor": factor,
                                         "low_freq_factor": low, "high_freq_factor": high,
                                         "original_max_position_embeddings": length})
    _assert_freqs(rope.inv_freq(head_dim), inv_freq)
    assert rope.attention_factor() == attention == 1.0


# ----------------------------------------------------------------------------- relative positions, rotary module

KINDS = [
    DefaultRope(theta=100.0),
    LinearRope(theta=100.0, factor=4.0),
    NtkRope(theta=100.0, factor=4.0),
    DynamicNtkRope(theta=100.0, factor=4.0, original_max_position_embeddings=16),
    YarnRope(theta=100.0, factor=4.0, original_max_position_embeddings=16),
    YarnRope(theta=100.0, factor=4.0, original_max_position_embeddings=16, truncate=False),
    Llama3Rope(theta=100.0, factor=4.0, original_max_position_embeddings=16),
    ReRope(theta=100.0, window=4),
    LeakyReRope(theta=100.0, window=4, k=4.0),
]


def test_every_kind_is_covered() -> None:
    assert {rope.kind for rope in KINDS} == set(RopeConfig.kinds())


@pytest.mark.parametrize("rope", KINDS, ids=lambda r: f"{r.kind}-{getattr(r, 'truncate', '')}")
@pytest.mark.parametrize("length", [12, 40])
def test_scores_depend_only_on_relative_position(rope: RopeConfig, length: int) -> None:
    head_dim = 16
    rot = Rotary(rope, head_dim)
    cos, sin = rot(0, length)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(head_dim, generator=gen), torch.randn(head_dim, generator=gen)
    q_T = apply_rotary(q.expand(1, 1, length, head_dim), cos, sin)[0, 0]
    k_T = apply_rotary(k.expand(1, 1, length, head_dim), cos, sin)[0, 0]
    scores = q_T @ k_T.T  # scores[m, n] = q_m . k_n
    scale = rope.attention_factor() ** 2 * q.norm() * k.norm()
    for offset in range(-length + 1, length):
        diagonal = torch.diagonal(scores, offset)
        assert torch.allclose(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-5 * scale.item(), rtol=0)
    if rope.kind != "dynamic" or length <= 16:  # one forward: frequencies fixed at the config's (or seq_len's)
        assert torch.equal(cos[:, : head_dim // 2], torch.outer(torch.arange(length, dtype=torch.float32),
                                                                 rot.inv_freq).cos() * rope.attention_factor())


def test_dynamic_rotary_recomputes_beyond_the_original_length_only() -> None:
    rope = DynamicNtkRope(theta=100.0, factor=2.0, original_max_position_embeddings=16)
    rot = Rotary(rope, 8)
    base = rot.inv_freq.clone()

    def freqs(start: int, length: int) -> torch.Tensor:  # recovered from the sin table at position 1
        cos, sin = rot(start, length)
        return torch.atan2(sin[1, :4], cos[1, :4]) - torch.atan2(sin[0, :4], cos[0, :4])

    torch.testing.assert_close(freqs(0, 16), base)
    torch.testing.assert_close(freqs(0, 40), torch.tensor(rope.inv_freq(8, 40), dtype=torch.float32))
    torch.testing.assert_close(freqs(30, 2), torch.tensor(rope.inv_freq(8, 32), dtype=torch.float32))
    assert not torch.allclose(freqs(0, 40), base)
    torch.testing.assert_close(freqs(0, 10), base)  # back under L: the original frequencies
    assert torch.equal(rot.inv_freq, base)  # the buffer itself never changes


@pytest.mark.parametrize("rope", [r for r in KINDS if r.kind != "dynamic"], ids=lambda r: r.kind)
def test_other_kinds_never_recompute(rope: RopeConfig) -> None:
    rot = Rotary(rope, 16)
    expected = rot(0, 200)

    def boom(*args, **kwargs):
        raise AssertionError("inv_freq recomputed")

    object.__setattr__(rope, "inv_freq", boom)
    try:
        got = rot(0, 200)
    finally:
        object.__delattr__(rope, "inv_freq")
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("rope", KINDS, ids=lambda r: r.kind)
def test_configs_round_trip_and_document_every_field(rope: RopeConfig) -> None:
    assert RopeConfig.from_dict(rope.to_dict()) == rope
    docs = field_docs(type(rope))
    assert set(docs) == set(rope.to_dict()) - {"kind"} and all(docs.values())


@pytest.mark.parametrize(("kind", "data", "key"), [
    ("linear", {"factor": 0.5}, "factor"),
    ("ntk", {"theta": 1.0}, "theta"),
    ("dynamic", {"original_max_position_embeddings": 0}, "original_max_position_embeddings"),
    ("yarn", {"beta_fast": 1.0, "beta_slow": 2.0}, "beta_fast"),
    ("yarn", {"attention_factor_override": -1.0}, "attention_factor_override"),
    ("llama3", {"low_freq_factor": 4.0, "high_freq_factor": 1.0}, "high_freq_factor"),
])
def test_bad_values_are_refused(kind: str, data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        RopeConfig.from_dict({"kind": kind, **data})
    assert e.value.key == key


# ----------------------------------------------------------------------------- the original length


@pytest.mark.parametrize("kind", ["dynamic", "yarn", "llama3"])
def test_original_length_defaults_to_the_training_length(kind: str) -> None:
    from isoflop.nn.config import ModelConfig

    shape = {"vocab_size": 64, "d_model": 32, "n_heads": 2, "n_layers": 1}
    unset = ModelConfig.from_dict({**shape, "rope": kind})
    assert unset.rope.original_max_position_embeddings is None
    with pytest.raises(ConfigError) as e:  # no training length to fall back on: refused, not guessed
        unset.build()
    assert e.value.key == "original_max_position_embeddings"
    resolved = ModelConfig.from_dict({**shape, "rope": kind, "train_length": 64})
    assert resolved.rope == RopeConfig.from_dict({"kind": kind, "original_max_position_embeddings": 64})
    # an explicit length (older config.json files, Hugging Face imports) keeps its value
    kept = ModelConfig.from_dict({**shape, "rope": {"kind": kind, "original_max_position_embeddings": 2048},
                                  "train_length": 64})
    assert kept.rope.original_max_position_embeddings == 2048
    assert torch.equal(resolved.build().rotary.inv_freq,
                       torch.tensor(resolved.rope.inv_freq(16), dtype=torch.float32))
