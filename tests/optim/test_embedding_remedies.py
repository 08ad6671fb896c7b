"""Embedding-anomaly remedies for Lion and Tiger: lazy embedding rows, and AdamW for the embedding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from isoflop.config import ConfigError
from isoflop.optim import Lion, Tiger
from isoflop.optim.config import LionConfig, OptimConfig, TigerConfig
from isoflop.optim.mixed import MixedOptimizer, split_embeddings
from isoflop.optim.param_groups import decay_groups
from isoflop.train.parallel import full_state, load_full_state

ABSENT = [1, 4, 5, 9]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(12, 6)
        self.proj = nn.Linear(6, 5)
        self.norm = nn.LayerNorm(5)


def _grads(model, step, absent=()):
    g = torch.Generator().manual_seed(100 + step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    model.embed.weight.grad[list(absent)] = 0.0


def _present():
    return [i for i in range(12) if i not in ABSENT]


@pytest.mark.parametrize("kind", ["lion", "tiger"])
def test_lazy_rows_absent_from_the_batch_do_not_move(kind):
    cfg = OptimConfig.from_dict({"kind": kind, "embeddings": "lazy", "weight_decay": 0.1, "lr": 0.01})
    lazy_model, dense_model = Net(), Net()
    lazy = cfg.build(lazy_model)
    dense = OptimConfig.from_dict({**cfg.to_dict(), "embeddings": "sign"}).build(dense_model)
    for opt, model in ((lazy, lazy_model), (dense, dense_model)):  # every row gets momentum first
        _grads(model, 0)
        opt.step()
    w0 = lazy_model.embed.weight.detach().clone()
    m0 = lazy.state[lazy_model.embed.weight]["exp_avg"].clone()
    for opt, model in ((lazy, lazy_model), (dense, dense_model)):
        _grads(model, 1, ABSENT)
        opt.step()
    w1 = lazy_model.embed.weight.detach()
    m1 = lazy.state[lazy_model.embed.weight]["exp_avg"]
    assert torch.equal(w1[ABSENT], w0[ABSENT]) and torch.equal(m1[ABSENT], m0[ABSENT])
    present = _present()
    assert not torch.equal(w1[present], w0[present]) and not torch.equal(m1[present], m0[present])
    # present rows move exactly as without the remedy; the dense optimizer moves the absent rows too
    assert torch.equal(w1[present], dense_model.embed.weight.detach()[present])
    assert torch.equal(m1[present], dense.state[dense_model.embed.weight]["exp_avg"][present])
    assert not torch.equal(dense_model.embed.weight.detach()[ABSENT], w0[ABSENT])
    for name in ("proj.weight", "proj.bias", "norm.weight"):  # other tensors are unaffected
        assert torch.equal(dict(lazy_model.named_parameters())[name], dict(dense_model.named_parameters())[name])


def test_lazy_needs_an_embedding_group_and_no_accumulation():
    with pytest.raises(ConfigError) as e:
        TigerConfig(embeddings="lazy", grad_accum_steps=2)
    assert e.value.key == "embeddings"
    with pytest.raises(ValueError):
        Tiger([{"params": [nn.Parameter(torch.ones(3, 3))], "lazy": True}])
    groups = LionConfig(embeddings="lazy").build(Net()).param_groups
    assert [(g["name"], g.get("lazy")) for g in groups] == [("decay", False), ("embedding", True),
                                                             ("no_decay", False)]


def _reference_pair(model, cfg):
    """A torch AdamW on the embedding (lr scaled) and a plain sign optimizer on the rest."""
    groups = split_embeddings(decay_groups(model, cfg.weight_decay), model)
    embed = [{**g, "weight_decay": cfg.embedding_weight_decay} for g in groups if g["name"] == "embedding"]
    rest = [g for g in groups if g["name"] != "embedding"]
    adamw = torch.optim.AdamW(embed, lr=cfg.lr, betas=cfg.embedding_betas, eps=1e-8)
    return adamw, Lion(rest, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def test_mixed_steps_adamw_rows_as_adamw_and_the_rest_as_lion():
    cfg = LionConfig(lr=2e-3, weight_decay=0.3, betas=(0.95, 0.98), embeddings="adamw", embedding_lr_scale=3.0,
                     embedding_weight_decay=0.05)
    model, ref_model = Net(), Net()
    opt = cfg.build(model)
    assert isinstance(opt, MixedOptimizer)
    assert {g["rule"] for g in opt.param_groups} == {"sign", "adamw"}
    adamw, lion = _reference_pair(ref_model, cfg)
    for step in range(6):
        lr = cfg.lr * (1.0 - 0.1 * step)  # the loop sets every group's lr each step
        for g in opt.param_groups:
            g["lr"] = lr
        for g in adamw.param_groups:
            g["lr"] = lr * 3.0
        for g in lion.param_groups:
            g["lr"] = lr
        _grads(model, step, ABSENT if step % 2 else ())
        _grads(ref_model, step, ABSENT if step % 2 else ())
        opt.step()
        adamw.step()
        lion.step()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert all(g["lr"] == pytest.approx(cfg.lr * 0.5) for g in opt.param_groups)  # lr_scale not left applied
    assert set(opt.state[model.embed.weight]) == {"step", "exp_avg", "exp_avg_sq"}
    assert set(opt.state[model.proj.weight]) == {"exp_avg"}


@pytest.mark.parametrize("kind", ["lion", "tiger"])
def test_mixed_state_dict_round_trip(kind):
    cfg = OptimConfig.from_dict({"kind": kind, "embeddings": "adamw", "embedding_lr_scale": 2.0})
    model = Net()
    opt = cfg.build(model)
    for step in range(3):
        _grads(model, step, ABSENT)
        opt.step()
    twin = copy.deepcopy(model)
    twin_opt = cfg.build(twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin_opt.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for step in range(3, 6):
        for m, o in ((model, opt), (twin, twin_opt)):
            _grads(m, step, ABSENT)
            o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    # the checkpoint path: full (FQN-keyed) state dicts, which may alias the live tensors
    model_state, optim_state = copy.deepcopy(full_state(model, opt))  # as if saved and read back
    third = Net()
    third_opt = cfg.build(third)
    load_full_state(third, third_opt, model_state, optim_state)
    for m, o in ((model, opt), (third, third_opt)):
        _grads(m, 7)
        o.step()
    for p, q in zip(model.parameters(), third.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind,embeddings", [("lion", "adamw"), ("tiger", "lazy")])
def test_a_tiny_run_trains_with_a_remedy(tmp_path, corpus_dir, kind, embeddings):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import tiny_overrides

    sets = [*tiny_overrides(corpus_dir, steps=6), f"optim.kind={kind}", f"optim.embeddings={embeddings}",
            "model.tie_embeddings=false", "train.micro_batch_size=8"]
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "isoflop", "train", "tiny", "--out", str(run),
                             *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True,
                            env={**os.environ, "ISOFLOP_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "config.json").read_text())["optim"]["embeddings"] == embeddings
