"""A model whose weights, gradients and optimizer state cannot fit is bad input, found before any allocation."""

from __future__ import annotations

import pytest
import torch

from isoflop.config import ConfigError
from isoflop.train.memory import available_bytes, check_fits, needed_bytes


def test_needed_bytes_count_weights_gradients_and_state():
    assert needed_bytes(1000, "adamw") == 16_000  # 4 + 4 + two fp32 moments
    assert needed_bytes(1000, "lion") == 12_000  # one momentum


def test_a_model_beyond_free_memory_is_refused_naming_model():
    free = available_bytes(torch.device("cpu"))
    assert free is not None and free > 0
    check_fits(free // 32, "adamw", torch.device("cpu"))  # half of what is free: fine
    with pytest.raises(ConfigError, match="GiB free") as e:
        check_fits(free // 8, "adamw", torch.device("cpu"))  # twice what is free
    assert e.value.key == "model"


def test_train_refuses_it_before_writing_anything(tmp_path, capsys):
    from isoflop.cli import main

    out = tmp_path / "run"
    assert main(["train", "tiny", "--out", str(out), "--set", "model.d_model=65536", "--set", "model.n_heads=512",
                 "--set", "model.n_kv_heads=512"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model:" in err and "GiB" in err
    assert not out.exists()
