"""HWFA and HWFA2 attention layouts: window attention against a brute-force masked softmax, the window rule,
NoPE and log-n on the full layer, cached decoding, ReRoPE on hwfa2's full layers, and a trainer run."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from isoflop.cli import main as cli_main
from isoflop.cli.common import load_experiment
from isoflop.config import ConfigError
from isoflop.nn.attention import Attention
from isoflop.nn.config import ModelConfig
from isoflop.nn.layout_attention import LayoutAttention, log_n_scale
from isoflop.nn.layout_config import Hwfa2Layout, HwfaLayout
from isoflop.nn.rerope import ReRopeAttention
from isoflop.nn.rope import DefaultRope
from isoflop.nn.rotary import Rotary, apply_rotary
from isoflop.train.run import run_training
from tests.conftest import tiny_overrides

D, HEADS, KV_HEADS, HEAD_DIM = 32, 4, 2, 8
CFG = dict(vocab_size=61, d_model=D, n_layers=4, n_heads=HEADS, n_kv_heads=KV_HEADS, train_length=8)


def _model(layout: dict, **over) -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelConfig.from_dict({**CFG, "layout": layout, **over}).build().eval()


def _rotary(theta: float = 100.0) -> Rotary:
    return Rotary(DefaultRope(theta=theta), HEAD_DIM)


def _brute_force(attn: Attention, x_BTD: torch.Tensor, window: int | None, cos_TH, sin_TH, rotate: bool,
                 q_scale_T1: torch.Tensor | None = None) -> torch.Tensor:
    """Attention entry by entry: score (i, j) for 0 <= i - j < window, softmax over the visible keys only."""
    B, T, _ = x_BTD.shape
    q = attn.q_proj(x_BTD).view(B, T, HEADS, HEAD_DIM).transpose(1, 2)
    k = attn.k_proj(x_BTD).view(B, T, KV_HEADS, HEAD_DIM).transpose(1, 2)
    v = attn.v_proj(x_BTD).view(B, T, KV_HEADS, HEAD_DIM).transpose(1, 2).double()
    if q_scale_T1 is not None:
        q = q * q_scale_T1
    if rotate:
        q, k = apply_rotary(q, cos_TH, sin_TH), apply_rotary(k, cos_TH, sin_TH)
    q, k = q.double(), k.double()
    y = torch.zeros(B, HEADS, T, HEAD_DIM, dtype=torch.float64)
    for b in range(B):
        for n in range(HEADS):
            kv = n // (HEADS // KV_HEADS)
            for i in range(T):
                visible = [j for j in range(i + 1) if window is None or i - j < window]
                scores = torch.stack([q[b, n, i] @ k[b, kv, j] for j in visible]) / math.sqrt(HEAD_DIM)
                y[b, n, i] = scores.softmax(-1) @ v[b, kv, visible]
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, D).float())


def _layer(**kw) -> LayoutAttention:
    torch.manual_seed(1)
    return LayoutAttention(D, HEADS, KV_HEADS, **kw)


X = torch.randn(2, 11, D, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_attention_equals_brute_force(window):
    attn, rotary = _layer(window=window), _rotary()
    cos, sin = rotary(0, 11)
    torch.testing.assert_close(attn(X, cos, sin), _brute_force(attn, X, window, cos, sin, True),
                               atol=2e-6, rtol=1e-5)


def test_window_at_least_the_length_is_full_attention():
    attn, rotary = _layer(window=11), _rotary()
    full = Attention(D, HEADS, KV_HEADS)
    full.load_state_dict(attn.state_dict())  # the same parameter names: checkpoints load across layouts
    cos, sin = rotary(0, 11)
    torch.testing.assert_close(attn(X, cos, sin), full(X, cos, sin), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(_layer(window=10)(X, cos, sin), full(X, cos, sin), atol=1e-4)


def test_window_rule():
    # (w - 1)(L - 1) + 1 <= alpha N with w as large as allowed. Su 9603's setting (24 layers, N = 512,
    # alpha = 3/4) gives w = 17 by this rule (receptive field 369 <= 384; w = 18 gives 392); his published
    # w = 16 (field 346 = 0.68 N) also satisfies it but is one below the largest.
    layout = HwfaLayout()
    assert layout.window_size(24, 512) == 17
    assert (17 - 1) * 23 + 1 <= 0.75 * 512 < (18 - 1) * 23 + 1
    assert (16 - 1) * 23 + 1 <= 0.75 * 512
    assert HwfaLayout(window=16).window_size(24, 512) == 16
    assert HwfaLayout(full_layers=2).window_size(24, 512) == 18  # 22 window layers: 17 * 22 + 1 = 375 <= 384
    layers = HwfaLayout().layers(24, 512, DefaultRope())
    assert [s.window for s in layers[:23]] == [17] * 23 and all(s.rotate for s in layers[:23])
    assert layers[23].window is None and not layers[23].rotate and layers[23].log_n_length == 512
    assert Hwfa2Layout().full_layer_indices(24) == [12]
    assert Hwfa2Layout(full_layers=2).full_layer_indices(24) == [8, 16]
    mid = Hwfa2Layout(full_layers=2, window=32).layers(24, 512, DefaultRope())
    assert [i for i, s in enumerate(mid) if s.window is None] == [8, 16] and all(s.rotate for s in mid)


def test_nope_layer_ignores_positions_and_window_layer_sees_only_relative_ones():
    rotary = _rotary()
    nope, window = _layer(window=None, rotate=False), _layer(window=4)
    at_zero, shifted = rotary(0, 11), rotary(37, 11)
    torch.testing.assert_close(nope(X, *at_zero), nope(X, *shifted), atol=0, rtol=0)
    torch.testing.assert_close(nope(X, *at_zero), _brute_force(nope, X, None, *at_zero, rotate=False),
                               atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(window(X, *at_zero), window(X, *shifted), atol=2e-6, rtol=1e-5)
    # Not trivially so: positions that are not a uniform shift change the window layer.
    scrambled = rotary.tables(torch.tensor([0.0, 5, 1, 9, 2, 3, 8, 4, 7, 6, 10]))
    assert not torch.allclose(window(X, *at_zero), window(X, *scrambled), atol=1e-4)


def test_log_n_factor_is_one_up_to_the_training_length():
    N = 8
    factors = log_n_scale(0, 20, N, "cpu").squeeze(-1)
    assert torch.equal(factors[:N], torch.ones(N))  # positions 0 .. N - 1: n = p + 1 <= N
    torch.testing.assert_close(factors[N:], torch.tensor([math.log(p + 1) / math.log(N) for p in range(N, 20)]))
    plain, scaled = _layer(window=None, rotate=False), _layer(window=None, rotate=False, log_n_length=N)
    cos, sin = _rotary()(0, 11)
    out_plain, out_scaled = plain(X, cos, sin), scaled(X, cos, sin)
    torch.testing.assert_close(out_scaled[:, :N], out_plain[:, :N], atol=0, rtol=0)
    torch.testing.assert_close(out_scaled, _brute_force(scaled, X, None, cos, sin, False, log_n_scale(0, 11, N, "cpu")),
                               atol=2e-6, rtol=1e-5)
    assert not torch.allclose(out_scaled[:, N:], out_plain[:, N:], atol=1e-5)


LAYOUTS = [
    {"kind": "hwfa", "window": 3},
    {"kind": "hwfa"},  # the rule: N = 8, 3 window layers -> w = floor(5 / 3) + 1 = 2
    {"kind": "hwfa2", "window": 3, "full_layers": 2},
    {"kind": "hwfa2", "window": 2, "rerope_window": 4},
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_cached_decode_equals_full_recompute(layout):
    model = _model(layout)
    tokens = torch.randint(0, 61, (2, 15), generator=torch.Generator().manual_seed(3))
    full = model(tokens)
    cache = model.new_cache(2, 15)
    rows = [model(tokens[:, :5], cache), model(tokens[:, 5:9], cache)]  # a prefill, then a chunk after it
    rows += [model(tokens[:, t:t + 1], cache) for t in range(9, 15)]  # one-token decoding
    torch.testing.assert_close(torch.cat(rows, dim=1), full, atol=1e-5, rtol=1e-5)


def test_layout_modules():
    hwfa = _model({"kind": "hwfa"})
    assert [(a.window, a.rotate, a.log_n_length) for a in (b.attention for b in hwfa.layers)] == \
        [(2, True, None)] * 3 + [(None, False, 8)]
    rerope = _model({"kind": "hwfa2", "window": 2, "full_layers": 2, "rerope_window": 4})
    kinds = [type(b.attention) for b in rerope.layers]
    assert kinds == [LayoutAttention, ReRopeAttention, ReRopeAttention, LayoutAttention]  # layers 4//3, 8//3


def test_hwfa2_rerope_with_a_wide_window_is_hwfa2_and_loads_its_weights():
    trained = _model({"kind": "hwfa2", "window": 3})
    wide, narrow = _model({"kind": "hwfa2", "window": 3, "rerope_window": 16}), \
        _model({"kind": "hwfa2", "window": 3, "rerope_window": 2})
    for m in (wide, narrow):
        m.load_state_dict(trained.state_dict(), strict=True)
    tokens = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(wide(tokens), trained(tokens), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(narrow(tokens), trained(tokens), atol=1e-4)


@pytest.mark.parametrize("over,key", [
    ({"layout": {"kind": "hwfa", "full_layers": 4}}, "layout.full_layers"),
    ({"layout": {"kind": "hwfa", "window": 0}}, "window"),
    ({"layout": {"kind": "hwfa", "alpha": 1.5}}, "alpha"),
    ({"layout": {"kind": "hwfa"}, "rope": {"kind": "rerope"}}, "rope.kind"),
    ({"layout": {"kind": "hwfa"}, "rope": {"log_n_length": 8}}, "rope.log_n_length"),
    ({"layout": {"kind": "hwfa2", "rerope_window": 4}, "rope": {"kind": "linear"}}, "rope.kind"),
    ({"layout": {"kind": "hwfa"}, "mod": {"kind": "topk"}}, "layout.kind"),
    ({"train_length": 1}, "train_length"),
])
def test_bad_layouts_name_their_key(over, key):
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_dict({**CFG, **over})
    assert e.value.key.endswith(key), e.value


def test_hwfa_needs_the_training_length():
    cfg = ModelConfig.from_dict({**CFG, "train_length": None, "layout": {"kind": "hwfa"}})
    with pytest.raises(ConfigError, match="train_length"):
        cfg.build()


def test_trainer_run_and_eval_at_longer_lengths(tmp_path, corpus_dir, cache_dir, capsys):
    cfg = load_experiment("tiny", tiny_overrides(corpus_dir, steps=4) + ["model.layout.kind=hwfa"])
    assert cfg.resolved_model.train_length == 32  # resolved from data.seq_len
    run = tmp_path / "run"
    with open(os.devnull, "w") as devnull:
        record = run_training(cfg, run, stream=devnull)
    assert math.isfinite(record.val_loss)
    capsys.readouterr()
    assert cli_main(["eval", str(run), "--seq-len", "64,256", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["seq_len"] for r in rows] == [64, 256] and all(math.isfinite(r["val_loss"]) for r in rows)
