"""`isoflop eval RUN --seq-len L1,L2 [--set model.rope...]`: a run evaluated at several lengths and RoPE kinds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import tiny_overrides


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "isoflop", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("evallen")
    run = root / "run"
    env = {"ISOFLOP_CACHE": str(root / "cache")}
    sets = [a for o in tiny_overrides(corpus_dir, steps=4) for a in ("--set", o)]
    result = cli("train", "tiny", "--out", run, *sets, env=env)
    assert result.returncode == 0, result.stderr
    return run, env


def test_eval_at_several_lengths_is_a_list(trained_run):
    run, env = trained_run
    result = cli("eval", run, "--seq-len", "32,128", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["seq_len"] for r in rows] == [32, 128]
    assert all({"seq_len", "val_loss", "val_bpb"} <= set(r) and math.isfinite(r["val_loss"]) for r in rows)
    plain = json.loads(cli("eval", run, "--json", env=env).stdout)  # same windows at the training length
    assert rows[0]["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-6)
    text = cli("eval", run, "--seq-len", "32,128", env=env)
    assert text.returncode == 0 and "seq_len    128" in text.stdout


def test_eval_with_a_switched_rope(trained_run):
    run, env = trained_run
    base = json.loads(cli("eval", run, "--seq-len", "128", "--json", env=env).stdout)
    result = cli("eval", run, "--seq-len", "32,128", "--set", "model.rope.kind=linear",
                 "--set", "model.rope.factor=4", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(math.isfinite(r["val_bpb"]) for r in rows)
    assert rows[1]["val_loss"] != base[0]["val_loss"]  # the positions really were interpolated


@pytest.mark.parametrize("extra,named", [(["--seq-len", "32,abc"], "--seq-len"),
                                         (["--seq-len", "0"], "--seq-len"),
                                         (["--seq-len", "100000000"], "--seq-len"),
                                         (["--set", "model.rope.kin=linear"], "model.rope.kin")])
def test_bad_eval_input_exits_2(trained_run, extra, named):
    run, env = trained_run
    result = cli("eval", run, *extra, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
