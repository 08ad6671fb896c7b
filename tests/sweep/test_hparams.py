"""The hyperparameter rules against the worked values of sweeps_and_dynamics.md §7.1, and their batch units."""

from __future__ import annotations

import pytest

from isoflop.errors import ConfigError
from isoflop.sweep.hparams import Batch, DeepSeekRule, FixedRule, HParamRule, PorianRule, round_batch
from isoflop.sweep.spec import parse_spec


def _choose(rule, *, n=1e8, c=1e19, lr=3e-3, batch=16, seq_len=256):
    return rule.choose(n_params=n, flops=c, base_lr=lr, base_batch=batch, seq_len=seq_len)


# C -> (eta_opt, B_opt in tokens): §7.1 (DeepSeek LLM eq. 1); 7B and 67B are the paper's models (M * D)
DEEPSEEK = [(8.456e22, 4.25e-4, 9.22e6), (9.946e23, 3.12e-4, 2.065e7),
            (1e17, 2.338e-3, 1.06e5), (1e19, 1.315e-3, 4.79e5), (1e21, 7.394e-4, 2.16e6)]


@pytest.mark.parametrize("flops, lr, tokens", DEEPSEEK)
def test_deepseek_worked_values(flops, lr, tokens):
    hp = _choose(DeepSeekRule(), c=flops)
    assert hp.lr == pytest.approx(lr, rel=2e-3)
    assert hp.batch.unit == "tokens" and hp.batch.tokens == pytest.approx(tokens, rel=3e-3)


def test_deepseek_batch_in_the_papers_sequences():
    """7B at 4096 tokens: B_opt = 9.22e6 tokens is about 2252 sequences (§7.1), never 9.22e6 sequences."""
    hp = _choose(DeepSeekRule(), c=8.456e22, seq_len=4096)
    assert round_batch(hp.batch, 4096) == 2252
    assert round_batch(hp.batch, 256) == pytest.approx(9.22e6 / 256, rel=1e-3)


# N -> (B in sequences of 2048, LR): §7.1 (Porian et al. 2024's rounded fit)
PORIAN = [(108e6, 160.0, 4.70e-3), (300e6, 316.2, 3.34e-3), (1e9, 705.5, 2.24e-3), (7e9, 2581.7, 1.17e-3)]


@pytest.mark.parametrize("n, sequences, lr", PORIAN)
def test_porian_worked_values(n, sequences, lr):
    hp = _choose(PorianRule(), n=n)
    assert hp.lr == pytest.approx(lr, rel=2e-3)
    assert hp.batch.unit == "sequences" and hp.batch.seq_len == 2048
    assert hp.batch.sequences(2048) == pytest.approx(sequences, abs=0.05)  # §7.1 gives one decimal
    # the same tokens at a run's own length: 8x the sequences of 256 tokens
    assert hp.batch.sequences(256) == pytest.approx(8 * hp.batch.sequences(2048), rel=1e-12)
    assert hp.batch.tokens == pytest.approx(2048 * hp.batch.sequences(2048), rel=1e-12)


def test_fixed_is_the_base():
    hp = _choose(FixedRule(), lr=3e-3, batch=16, seq_len=256)
    assert hp.lr == 3e-3 and round_batch(hp.batch, 256) == 16


def test_a_bare_number_is_not_a_batch():
    """The unit-mismatch trap: DeepSeek's B is tokens; it reaches train.batch_size only through a Batch."""
    tokens = _choose(DeepSeekRule(), c=8.456e22).batch.value
    with pytest.raises(TypeError, match="takes a Batch"):
        round_batch(tokens, 4096)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs the sequence length"):
        Batch(tokens, "sequences")  # a sequence count of unknown length
    with pytest.raises(ConfigError, match="'tokens' or 'sequences'"):
        Batch(tokens, "seqs")  # type: ignore[arg-type]


@pytest.mark.parametrize("value, unit, seq_len, multiple, expected", [
    (10.0, "tokens", None, 1, 1),            # at least one sequence
    (100.0, "sequences", 256, 32, 96),      # the nearest multiple of the micro batch
    (3.0, "sequences", 256, 32, 32),        # at least one micro batch
    (13.75 * 256, "tokens", None, 1, 14),   # nearest, not floor
])
def test_round_batch(value, unit, seq_len, multiple, expected):
    assert round_batch(Batch(value, unit, seq_len), 256, multiple) == expected


def test_the_family_in_a_spec():
    assert isinstance(parse_spec("budgets = [1e12]").hparams, DeepSeekRule)
    assert isinstance(parse_spec('budgets = [1e12]\nhparams = "porian"').hparams, PorianRule)
    rule = parse_spec('budgets = [1e12]\n[hparams]\nkind = "porian"\nlr_coef = 0.00235').hparams
    assert rule.lr_coef == 0.00235 and HParamRule.kinds() == ["deepseek", "fixed", "porian"]
    with pytest.raises(ConfigError, match="hparams.kind"):
        parse_spec('budgets = [1e12]\nhparams = "mup"')
    with pytest.raises(ConfigError, match="hparams.batch_coef"):
        parse_spec('budgets = [1e12]\n[hparams]\nbatch_coef = 0')
