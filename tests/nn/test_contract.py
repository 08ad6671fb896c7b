"""The model <-> trainer contract (nn/contract.py): TransformerLM has every member of TrainableLM with the same
parameters, and answers from its routed modules (MoE layers, MoD blocks) alone."""

from __future__ import annotations

import inspect

import pytest
import torch

from isoflop.nn.config import ModelConfig
from isoflop.nn.contract import RoutedModule, TrainableLM
from isoflop.nn.ffn_config import MoEFFN, SigmoidBias
from isoflop.nn.mod import RoutedBlock
from isoflop.nn.mod_config import TopKMoD
from isoflop.nn.model import TransformerLM
from isoflop.nn.moe import MoE

SHAPE = dict(vocab_size=64, d_model=32, n_layers=4, n_heads=2)


def _members(cls: type) -> list[str]:
    return [name for name, value in vars(cls).items() if callable(value) and (name == "__call__"
                                                                                or not name.startswith("_"))]


def test_transformer_lm_satisfies_the_protocol_structurally():
    model = ModelConfig(**SHAPE).build()
    assert isinstance(model, TrainableLM)
    assert set(_members(TrainableLM)) == {"__call__", "aux_loss", "routing_stats", "routing_load_buffers",
                                          "after_optimizer_step", "non_causal_reason", "has_causal_rule",
                                          "use_causal_routing"}  # the names the trainer calls
    for name in _members(TrainableLM):
        expected = list(inspect.signature(getattr(TrainableLM, name)).parameters)[1:]
        # __call__ is nn.Module's (*args, **kwargs) dispatching to forward, which takes the tokens first
        ours = getattr(TransformerLM, "forward" if name == "__call__" else name)
        got = list(inspect.signature(ours).parameters)[1:]
        assert got[: len(expected)] == expected, (name, got, expected)
        assert all(p.default is not inspect.Parameter.empty
                   for p in list(inspect.signature(ours).parameters.values())[1 + len(expected):]), name


def test_a_plain_model_has_nothing_routed():
    model = ModelConfig(**SHAPE).build()
    model(torch.zeros(1, 5, dtype=torch.long))
    assert model.aux_loss() is None and model.routing_stats() == {} and model.routing_load_buffers() == []
    assert model.non_causal_reason() is None and not model.has_causal_rule()


@pytest.mark.parametrize("over, routed", [
    ({"ffn": MoEFFN(experts=4, top_k=2, every=2, router=SigmoidBias())}, [MoE, MoE]),
    ({"mod": TopKMoD(capacity=0.5)}, [RoutedBlock, RoutedBlock]),
    ({"mod": TopKMoD(capacity=0.5, every=4), "ffn": MoEFFN(experts=4, top_k=1)}, [MoE, MoE, MoE, RoutedBlock, MoE]),
])
def test_the_model_answers_from_its_routed_modules(over, routed):
    torch.manual_seed(0)
    model = ModelConfig(**SHAPE, **over).build()
    assert [type(m) for m in model.modules() if isinstance(m, RoutedModule)] == routed
    model(torch.randint(0, 64, (2, 8)))
    losses = [m.aux_loss for m in model.modules() if isinstance(m, RoutedModule) and m.aux_loss is not None]
    torch.testing.assert_close(model.aux_loss(), torch.stack(losses).sum())
    buffers = [b for m in model.modules() if isinstance(m, MoE) for b in [m.load_since_step]]
    assert len(model.routing_load_buffers()) == len(buffers)
    assert all(a is b for a, b in zip(model.routing_load_buffers(), buffers, strict=True))
    assert model.has_causal_rule() == (RoutedBlock in routed)
    model.use_causal_routing(True)
    assert all(m.causal_routing for m in model.modules() if isinstance(m, RoutedBlock))
