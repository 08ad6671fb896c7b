"""run_planned: one planned run trained, resumed, skipped, forked from its trunk, or refused, in-process."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from isoflop.errors import ConfigError
from isoflop.sweep.plan import InitPoint
from isoflop.sweep.run_one import PreviouslyFailed, run_planned
from tests.sweep.hand_plans import make_sweep, record_values, tiny_run


@pytest.fixture
def quiet():
    with open(os.devnull, "w") as devnull:
        yield devnull


def test_fresh_then_skipped_then_resumed_to_the_same_record(tmp_path, corpus_dir, cache_dir, quiet):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir), tiny_run("b", corpus_dir)])
    first = run_planned(sweep, "a", stream=quiet)
    assert sweep.run_dir("a").is_complete() and first.steps == 12
    mtime = sweep.run_dir("a").record_file.stat().st_mtime_ns
    assert run_planned(sweep, "a", stream=quiet) == first  # complete: its record, nothing trained
    assert sweep.run_dir("a").record_file.stat().st_mtime_ns == mtime

    # b trained to the end, then put back to "stopped after step 8" (as a kill leaves it): it resumes there
    run_planned(sweep, "b", stream=quiet)
    reference = record_values(sweep, "b")
    b = sweep.run_dir("b")
    shutil.rmtree(b.step_dir(12))
    b.record_file.unlink()
    run_planned(sweep, "b", stream=quiet)
    assert record_values(sweep, "b") == reference
    assert [r["step"] for r in b.metrics.train_records()] == list(range(1, 13))  # one run's log, not two


def test_a_fork_starts_from_its_trunk_checkpoint_and_needs_it(tmp_path, corpus_dir, cache_dir, quiet):
    trunk = tiny_run("T", corpus_dir, steps=16, role="trunk", extra=("checkpoint.at=[8]",))
    fork = tiny_run("f", corpus_dir, steps=12, role="fork", init_from=InitPoint(key="T", step=8))
    sweep = make_sweep(tmp_path / "s", [trunk, fork], mode="fork")
    with pytest.raises(ConfigError, match="runs/T.*no checkpoint at step 8"):
        run_planned(sweep, "f", stream=quiet)
    assert not sweep.run_dir("f").is_run()
    run_planned(sweep, "T", stream=quiet)
    record = run_planned(sweep, "f", stream=quiet)
    init = sweep.run_dir("f").read_init()
    assert init["step"] == 8 and init["optimizer"] and init["data"]
    assert init["run"] == str(sweep.run_dir("T").path.resolve())
    # data=True continues the trunk's trajectory: the fork's log holds the trunk's steps 1..8, then its own
    assert [r["step"] for r in sweep.run_dir("f").metrics.train_records()] == list(range(1, 13))
    assert record.steps == 12


def test_a_failed_run_is_refused_until_retried(tmp_path, corpus_dir, cache_dir, quiet):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    sweep.run_dir("a").write_failure("killed by SIGKILL", 5)
    with pytest.raises(PreviouslyFailed, match="failed before at step 5: killed by SIGKILL"):
        run_planned(sweep, "a", stream=quiet)
    record = run_planned(sweep, "a", stream=quiet, retry_failed=True)
    assert record.steps == 12 and sweep.run_dir("a").read_failure() is None


def test_divergence_is_recorded_as_a_failure(tmp_path, corpus_dir, cache_dir, quiet):
    from isoflop.train.step import NonFiniteLoss

    sweep = make_sweep(tmp_path / "s", [tiny_run("bad", corpus_dir, extra=("optim.lr=1e30",))])
    with pytest.raises(NonFiniteLoss):
        run_planned(sweep, "bad", stream=quiet)
    failure = sweep.run_dir("bad").read_failure()
    assert failure["reason"].startswith("NonFiniteLoss") and failure["step"] >= 1


def test_a_run_whose_config_is_not_the_plans_is_refused_and_left_alone(tmp_path, corpus_dir, cache_dir, quiet):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    run_planned(sweep, "a", stream=quiet)
    run = sweep.run_dir("a")
    config = json.loads(run.config_file.read_text())
    config["optim"]["lr"] = 0.5
    run.config_file.write_text(json.dumps(config))
    before = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    with pytest.raises(ConfigError, match=r"differs from the plan's \(at optim.lr\)"):
        run_planned(sweep, "a", stream=quiet)
    assert sorted(p.relative_to(run.path) for p in run.path.rglob("*")) == before


def test_unknown_key_and_missing_plan(tmp_path, corpus_dir):
    sweep = make_sweep(tmp_path / "s", [tiny_run("a", corpus_dir)])
    with pytest.raises(ConfigError, match="no such run"):
        run_planned(sweep, "nope")
    from isoflop.sweep.layout import SweepDir

    with pytest.raises(ConfigError, match="not a sweep folder"):
        run_planned(SweepDir(tmp_path / "empty"), "a")
