from __future__ import annotations

import math

import pytest
import torch

from isoflop.optim import Lion, Tiger
from isoflop.optim.tiger import tiger_groups


def _params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 4, generator=g), torch.randn(7, generator=g)]


def _grads(steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    """Per step, one gradient per tensor of `_params`; coordinate [0, 0] of the matrix is always zero."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        grads = [torch.randn(5, 4, generator=g), torch.randn(7, generator=g)]
        grads[0][0, 0] = 0.0
        out.append(grads)
    return out


def _run(opt_cls, grads, **kw) -> list[torch.Tensor]:
    params = [p.clone().requires_grad_() for p in _params()]
    opt = opt_cls(params, **kw)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("decoupled", [False, True])
def test_lion_matches_lion_pytorch(decoupled):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    grads = _grads(10)
    kw = {"lr": 3e-3, "betas": (0.8, 0.95), "weight_decay": 0.3, "decoupled_weight_decay": decoupled}
    ours, theirs = _run(Lion, grads, **kw), _run(lion_pytorch.Lion, grads, **kw)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # sign(0) = 0: the always-zero-gradient coordinate only decays
    wd = kw["weight_decay"] / (kw["lr"] if decoupled else 1.0)
    expected = _params()[0][0, 0] * (1 - kw["lr"] * wd) ** 10
    torch.testing.assert_close(ours[0][0, 0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("role", ["matrix", "embedding"])
def test_tiger_without_rms_scaling_is_lion_with_equal_betas(role):
    grads = _grads(10)
    params = [p.clone().requires_grad_() for p in _params()]
    tiger = Tiger([{"params": params, "role": role}], lr=2e-3, beta=0.9, weight_decay=0.2, rms_scaling=False)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        tiger.step()
    lion = _run(Lion, grads, lr=2e-3, betas=(0.9, 0.9), weight_decay=0.2)
    for a, b in zip(params, lion, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("rms_scaling", [False, True])
def test_tiger_accumulation_equals_step_on_mean_gradient(rms_scaling):
    k, cycles = 3, 4
    micro = _grads(k * cycles, seed=2)
    means = [[torch.stack([micro[c * k + i][j] for i in range(k)]).mean(0) for j in range(2)]
             for c in range(cycles)]
    kw = {"lr": 1e-2, "beta": 0.9, "weight_decay": 0.1, "rms_scaling": rms_scaling}
    accumulated = _run(Tiger, micro, grad_accum_steps=k, **kw)
    plain = _run(Tiger, means, **kw)
    for a, b in zip(accumulated, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # between cycle ends the weights do not move
    params = [p.clone().requires_grad_() for p in _params()]
    opt = Tiger(params, grad_accum_steps=k, **kw)
    for p, g in zip(params, micro[0], strict=True):
        p.grad = g.clone()
    opt.step()
    for a, b in zip(params, _params(), strict=True):
        assert torch.equal(a.detach(), b)


def test_tiger_nan_guard_keeps_momentum_and_shrinks_towards_centre():
    matrix, gain = torch.randn(4, 3).requires_grad_(), (1 + 0.1 * torch.randn(3)).requires_grad_()
    opt = Tiger([{"params": [matrix], "role": "matrix"}, {"params": [gain], "role": "gain"}], lr=1e-2, beta=0.9)
    matrix.grad, gain.grad = torch.randn(4, 3), torch.randn(3)
    opt.step()
    m_before = [opt.state[p]["exp_avg"].clone() for p in (matrix, gain)]
    w_before = [matrix.detach().clone(), gain.detach().clone()]
    matrix.grad, gain.grad = torch.randn(4, 3), torch.randn(3)
    matrix.grad[1, 2] = float("nan")
    opt.step()
    for p, m in zip((matrix, gain), m_before, strict=True):
        assert torch.equal(opt.state[p]["exp_avg"], m)
    torch.testing.assert_close(matrix.detach(), w_before[0] * 0.99)
    torch.testing.assert_close(gain.detach(), (w_before[1] - 1) * 0.99 + 1)


def test_tiger_roles_half_lr_for_gains_and_per_row_rms_for_embeddings():
    from isoflop.nn.config import ModelConfig

    model = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, tie_embeddings=False).build()
    groups = tiger_groups(model, 0.01)
    roles = {g["role"]: g for g in groups}
    assert set(roles) == {"matrix", "embedding", "gain"}
    assert roles["embedding"]["params"] == [model.embed.weight]
    assert roles["gain"]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in roles["gain"]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

    lr, wd = 1e-2, 0.01
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    Tiger(groups, lr=lr, weight_decay=wd).step()  # first step: sign(m) = sign(g)
    params = dict(model.named_parameters())
    emb, emb0 = params["embed.weight"], before["embed.weight"]
    eta = lr * emb0.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(emb.detach(), emb0 * (1 - eta * wd) - eta * emb.grad.sign())
    mat, mat0 = params["lm_head.weight"], before["lm_head.weight"]
    eta = lr * mat0.norm() / math.sqrt(mat0.numel())
    torch.testing.assert_close(mat.detach(), mat0 * (1 - eta * wd) - eta * mat.grad.sign())
    norm, norm0 = params["norm.weight"], before["norm.weight"]
    torch.testing.assert_close(norm.detach(), norm0 - 0.5 * lr * norm.grad.sign())


def test_tiger_state_dict_round_trip_keeps_accumulation_phase():
    params = [p.clone().requires_grad_() for p in _params()]
    opt = Tiger(params, grad_accum_steps=2)
    for p, g in zip(params, _grads(1)[0], strict=True):
        p.grad = g
    opt.step()
    fresh = Tiger(params, grad_accum_steps=2)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.micro_step == 1 and fresh.cycle_decayed


@pytest.mark.parametrize("kind", ["lion", "tiger"])
def test_optim_kind_builds_from_recipe(kind):
    from isoflop.cli.common import load_experiment

    cfg = load_experiment("tiny", [f"optim.kind={kind}", "optim.lr=2e-4"])
    assert cfg.optim.kind == kind and cfg.optim.lr == 2e-4
    model = cfg.resolved_model.build()
    opt = cfg.optim.build(model)
    assert isinstance(opt, Lion if kind == "lion" else Tiger)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_optim_package_and_config_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, isoflop.optim, isoflop.optim.config; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from isoflop.optim import Lion, Tiger")
    subprocess.run([sys.executable, "-c", code], check=True)
