"""The run directory's layout and checks, on a run written by an earlier isoflop (tests/fixtures)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from isoflop.config import ConfigError
from isoflop.rundir import RunDir, find_runs, first_difference, step_of

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_2586d9e"
SRC = Path(__file__).resolve().parents[2] / "src" / "isoflop"


def test_a_run_written_at_2586d9e_still_reads():
    run = RunDir(FIXTURE)
    assert run.is_run() and run.is_complete()
    record = run.read_record()
    assert (record.N_total, record.D_tokens, record.steps, record.tokenizer) == (8000, 256, 4, "byte")
    assert record.val_loss == pytest.approx(5.102071523666382, rel=0, abs=0)
    assert record.training_time_s == pytest.approx(0.3120121259998996) and record.val_loss_causal is None
    assert run.checkpoint_steps() == [4] and run.latest_checkpoint() == run.step_dir(4)
    assert [e["step"] for e in run.metrics.eval_records()] == [2, 4]
    assert [r["step"] for r in run.metrics.train_records()] == [1, 2, 3, 4]
    assert run.read_plan()["steps"] == 4 and run.read_config()["model"]["d_model"] == 16


def test_the_fixture_model_loads_and_scores_its_final_loss():
    """The old checkpoint loads into today's model, and its logits still give a finite loss on byte input."""
    import torch

    from isoflop.train.artifacts import load_config, load_model

    cfg = load_config(FIXTURE)
    assert cfg.resolved_model.vocab_size == 257
    model = load_model(FIXTURE)
    tokens_BT = torch.arange(32).view(2, 16)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(tokens_BT)[:, :-1].flatten(0, 1), tokens_BT[:, 1:].flatten())
    assert torch.isfinite(loss) and 3.0 < float(loss) < 8.0  # a 4-step model: near ln 257 = 5.55


def test_step_folders():
    assert step_of(RunDir(FIXTURE).step_dir(123)) == 123
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        step_of("checkpoints/.tmp_step_0000004_99")
    with pytest.raises(ConfigError, match="no checkpoint at step 2"):
        RunDir(FIXTURE).checkpoint(2)


def test_check_start(tmp_path):
    config = RunDir(FIXTURE).read_config()
    RunDir(tmp_path / "new").check_start(config, resume=False)  # absent: fine
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not an empty directory"):
        RunDir(tmp_path / "junk").check_start(config, resume=False)
    with pytest.raises(ConfigError, match="--resume: no run here"):
        RunDir(tmp_path / "junk").check_start(config, resume=True)
    copy = RunDir(shutil.copytree(FIXTURE, tmp_path / "copy"))
    with pytest.raises(ConfigError, match="already holds a run"):
        copy.check_start(config, resume=False)
    copy.check_start(config, resume=True)
    changed = {**config, "train": {**config["train"], "seed": 7}}
    with pytest.raises(ConfigError, match=r"different config \(at train.seed\)"):
        copy.check_start(changed, resume=True)


def test_find_runs(tmp_path):
    for name in ("b", "a"):
        shutil.copytree(FIXTURE, tmp_path / "sweep" / name)
    (tmp_path / "sweep" / "not_a_run").mkdir()
    assert [r.name for r in find_runs(tmp_path / "sweep")] == ["a", "b"]
    assert [r.name for r in find_runs(tmp_path / "sweep" / "a")] == ["a"]
    (tmp_path / "sweep" / "b" / "run.json").unlink()
    assert [r.name for r in find_runs(tmp_path / "sweep")] == ["a"]
    assert [r.name for r in find_runs(tmp_path / "sweep", complete=False)] == ["a", "b"]


def test_first_difference():
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == "a.c"
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == "z"
    assert first_difference(1, 2) == "the top level"


# the run directory's names, and where they may appear: only in rundir/, and Hugging Face's own config.json
# (a different folder's file) in the HF interop and its CLI verb
NAMES = r"(?<![\w.])(config\.json|plan\.json|run\.json|metrics\.jsonl|upcycle\.json|expand\.json|init\.json|failure\.json|train\.lock)|\"checkpoints\"|step_\{|step_NNNNNNN"
HF_CONFIG_ALLOWED = ("interop/", "cli/export.py")
SWEEP_PLAN_ALLOWED = ("sweep/layout.py",)  # the sweep folder's own plan.json (a different folder's file)


def test_no_module_outside_rundir_spells_a_run_directory_name():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("rundir/"):
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(NAMES, line):
                if match.group(0) == "config.json" and rel.startswith(HF_CONFIG_ALLOWED):
                    continue
                if match.group(0) == "plan.json" and rel in SWEEP_PLAN_ALLOWED:
                    continue
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
