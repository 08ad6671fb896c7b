"""The run directory: one folder per training run, laid out so that a kill at any moment leaves it readable.

    config.json                the ExperimentConfig as plain data: written first, before any compute
    plan.json                  the resolved plan (steps, batch split, parameter counts, FLOPs), also first
    tokenizer/                 the tokenizer the shards were made with (copied whole, then renamed)
    metrics.jsonl              one JSON record per logged step and per evaluation (metrics.py)
    checkpoints/step_NNNNNNN/  atomic step checkpoints; train/checkpoint.py owns what is inside one
    run.json                   the RunRecord (record.py), written last: the mark that the run is complete
    run.step_NNNNNNN.json      the record of an earlier finish at step N, set aside when the horizon was extended
    tb/                        TensorBoard events, when log.tensorboard is on
    upcycle.json, expand.json  what `isoflop upcycle` / `isoflop expand` did, in a run they wrote
    init.json                  where a run's initial weights came from (`train --init-from RUN@STEP`)
    failure.json               why training last failed ({"reason", "step", "time"}); removed by a finish
    train.lock                 flock-ed by the process training the run (rundir/lock.py); never deleted

A folder is *a run* once config.json is there, *complete* once run.json is. A run killed before its first
checkpoint restarts from step 0 (or from its init.json source); one killed later resumes from its newest
complete checkpoint. train.lock alone makes a folder neither a run nor unfit for a fresh start.

This module is the only place these names are spelled; it imports neither torch nor numpy, so science and the
CLI read runs without them.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import isoflop.rundir.atomic as atomic
from isoflop.errors import ConfigError
from isoflop.rundir.lock import FileLock
from isoflop.rundir.metrics import MetricsLog
from isoflop.rundir.record import RunRecord

CONFIG_FILE = "config.json"
PLAN_FILE = "plan.json"
TOKENIZER_DIR = "tokenizer"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
RECORD_FILE = "run.json"
TENSORBOARD_DIR = "tb"
INIT_FILE = "init.json"
FAILURE_FILE = "failure.json"
LOCK_FILE = "train.lock"
SURGERY_KINDS = ("upcycle", "expand")
"""The surgeries that write a run directory, each leaving `<kind>.json` in it."""
_STEP_DIR = re.compile(r"^step_(\d{7})$")
_EARLIER_RECORD = re.compile(r"^run\.step_(\d{7})\.json$")


def step_dir_name(step: int) -> str:
    """The folder name of checkpoint `step` under checkpoints/ (seven digits, so names sort as steps)."""
    return f"step_{step:07d}"


def step_of(checkpoint_dir: str | Path) -> int:
    """The step of a checkpoint folder (checkpoints/step_NNNNNNN); ValueError for any other name."""
    match = _STEP_DIR.match(Path(checkpoint_dir).name)
    if match is None:
        raise ValueError(f"{checkpoint_dir}: not a checkpoint folder (step_NNNNNNN)")
    return int(match.group(1))


def read_json(path: Path) -> Any:
    """A JSON file of a run; ConfigError naming it when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"unreadable ({e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), f"not valid JSON (line {e.lineno}: {e.msg})") from None


class RunDir:
    """One run directory. Paths, the checks that decide what may happen in it, and its readers and writers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ paths
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def plan_file(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def record_file(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def metrics(self) -> MetricsLog:
        return MetricsLog(self.path / METRICS_FILE)

    @property
    def init_file(self) -> Path:
        return self.path / INIT_FILE

    @property
    def failure_file(self) -> Path:
        return self.path / FAILURE_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    def earlier_record_file(self, step: int) -> Path:
        """Where the record of a finish at `step` goes when the run's horizon is extended past it."""
        return self.path / f"run.step_{step:07d}.json"

    def surgery_file(self, kind: str) -> Path:
        """`<kind>.json`, the record of the surgery that wrote this run (kind in SURGERY_KINDS)."""
        if kind not in SURGERY_KINDS:
            raise ValueError(f"unknown surgery {kind!r}; known: {', '.join(SURGERY_KINDS)}")
        return self.path / f"{kind}.json"

    # ------------------------------------------------------------------ state
    def is_run(self) -> bool:
        """config.json is there: a run was started here (by training or by surgery)."""
        return self.config_file.is_file()

    def is_complete(self) -> bool:
        """run.json is there: training finished and the record was written."""
        return self.record_file.is_file()

    def require_run(self) -> RunDir:
        """self, or ConfigError naming the folder when no run was started here."""
        if not self.is_run():
            raise ConfigError(str(self.path), f"not a run directory (no {CONFIG_FILE})")
        return self

    def require_complete(self) -> RunDir:
        """self, or ConfigError naming the folder when the run has not finished."""
        self.require_run()
        if not self.is_complete():
            raise ConfigError(str(self.path), f"the run is not complete (no {RECORD_FILE})")
        return self

    def check_start(self, config: dict[str, Any], *, resume: bool,
                    normalize: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d,
                    may_differ: Sequence[str] = ()) -> bool:
        """Refuse (ConfigError) a folder that holds another run, or a resume with nothing to resume. On resume the
        saved config, read through `normalize` (the current schema), must equal `config` except under the dotted
        keys `may_differ`; True when it differs there (False for a fresh start, or an equal config)."""
        if resume:
            if not self.is_run():
                raise ConfigError(str(self.path), f"--resume: no run here (no {CONFIG_FILE})")
            difference = self.config_difference(config, normalize, ignore=may_differ)
            if difference is not None:
                raise ConfigError(str(self.path), f"--resume: the run here has a different config (at {difference})")
            return self.config_difference(config, normalize) is not None
        if self.is_run():
            raise ConfigError(str(self.path), "already holds a run; pass --resume to continue it, or choose another --out")
        if not self.holds_only_lock():
            atomic.check_empty_or_absent(self.path)  # a lock file alone is what a trainer holding it leaves
        return False

    def config_difference(self, config: dict[str, Any],
                          normalize: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d,
                          ignore: Sequence[str] = ()) -> str | None:
        """The first dotted key where the saved config (through `normalize`) and `config` differ, or None;
        differences under the dotted keys `ignore` do not count."""
        saved = normalize(self.read_config())
        for key in ignore:  # compare as if the saved config had `config`'s values there
            _graft(saved, config, key.split("."))
        return None if saved == config else first_difference(saved, config)

    # ------------------------------------------------------------------ the training lock
    def create(self) -> bool:
        """Make the folder (and its parents); True when this call made it (so it may remove it again)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(str(self.path), "exists and is not a directory")
        try:
            self.path.mkdir(parents=True)
        except FileExistsError:
            return False
        except OSError as e:
            raise ConfigError(str(self.path), f"cannot create the folder ({e.strerror or e})") from None
        return True

    def acquire_lock(self) -> FileLock:
        """Hold train.lock (creating the folder) until the returned lock's `release()` or this process ends;
        ConfigError naming the folder when another process holds it."""
        self.create()
        lock = FileLock(self.lock_file)
        if not lock.acquire():
            pid = lock.holder()
            raise ConfigError(str(self.path), f"another process is training this run (pid {pid if pid else '?'})")
        return lock

    def is_locked(self) -> bool:
        """A process is training this run now (its train.lock is held); never blocks."""
        return FileLock(self.lock_file).is_held()

    def holds_only_lock(self) -> bool:
        """The folder exists and holds nothing but (at most) train.lock: nothing was written here."""
        return self.path.is_dir() and {p.name for p in self.path.iterdir()} <= {LOCK_FILE}

    # ------------------------------------------------------------------ files
    def read_config(self) -> dict[str, Any]:
        """config.json as plain data (ConfigError when there is none or it is not a JSON table)."""
        self.require_run()
        data = read_json(self.config_file)
        if not isinstance(data, dict):
            raise ConfigError(str(self.config_file), f"expected a table of keys, got {type(data).__name__}")
        return data

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.config_file, config)

    def read_plan(self) -> dict[str, Any]:
        return read_json(self.plan_file)

    def write_plan(self, plan: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.plan_file, plan)

    def read_record(self) -> RunRecord:
        """run.json as a RunRecord; ConfigError naming the file when it is missing or not a record."""
        return RunRecord.from_dict(read_json(self.record_file), where=str(self.record_file))

    def write_record(self, record: RunRecord) -> None:
        atomic.write_json(self.record_file, record.to_dict())

    def set_record_aside(self) -> Path:
        """Move run.json to run.step_NNNNNNN.json (N = its steps), so the run no longer reads as complete and
        the earlier finish is kept; the new path."""
        target = self.earlier_record_file(self.read_record().steps)
        os.replace(self.record_file, target)
        return target

    def earlier_records(self) -> list[Path]:
        """The records set aside by horizon extensions, oldest finish first."""
        found = [p for p in self.path.iterdir() if _EARLIER_RECORD.match(p.name)] if self.path.is_dir() else []
        return sorted(found)

    def write_init(self, source: dict[str, Any]) -> None:
        """init.json: where the run's initial weights came from (train/init_from.py writes it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.init_file, source)

    def read_init(self) -> dict[str, Any] | None:
        """init.json as data, or None when the run was initialised from scratch."""
        return read_json(self.init_file) if self.init_file.is_file() else None

    def write_failure(self, reason: str, step: int | None) -> None:
        """failure.json: why training failed and at which step (None: before the first step, or unknown)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.failure_file, {"reason": reason, "step": step,
                                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def read_failure(self) -> dict[str, Any] | None:
        """failure.json as data ({"reason", "step", "time"}), or None when the run has not failed."""
        return read_json(self.failure_file) if self.failure_file.is_file() else None

    def clear_failure(self) -> None:
        self.failure_file.unlink(missing_ok=True)

    def write_surgery(self, kind: str, record: dict[str, Any]) -> None:
        atomic.write_json(self.surgery_file(kind), record)

    def read_surgery(self, kind: str) -> dict[str, Any]:
        return read_json(self.surgery_file(kind))

    def copy_tokenizer(self, source: str | Path) -> None:
        """Copy a tokenizer folder into tokenizer/, whole or not at all; a tokenizer already there is kept."""
        if not self.tokenizer_dir.exists():
            atomic.copy_dir(source, self.tokenizer_dir)

    # ------------------------------------------------------------------ checkpoints
    def step_dir(self, step: int) -> Path:
        return self.checkpoints_dir / step_dir_name(step)

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending (temporaries of a killed save are not listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoints_dir.iterdir() if (m := _STEP_DIR.match(p.name)))

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        steps = self.checkpoint_steps()
        return self.step_dir(steps[-1]) if steps else None

    def checkpoint(self, step: int | None = None) -> Path:
        """Checkpoint `step` (None: the newest); ConfigError when there is none."""
        if step is None:
            path = self.latest_checkpoint()
            if path is None:
                raise ConfigError(str(self.path), "holds no checkpoint yet")
            return path
        path = self.step_dir(step)
        if not path.is_dir():
            raise ConfigError(str(self.path), f"has no checkpoint at step {step} (has {self.checkpoint_steps()})")
        return path


def find_runs(folder: str | Path, *, complete: bool = True) -> list[RunDir]:
    """`folder` itself when it is a run, else its immediate subfolders that are (a sweep, a study's runs/),
    sorted by name. With `complete`, only finished runs (run.json) count."""
    def counts(run: RunDir) -> bool:
        return run.is_complete() if complete else run.metrics.path.is_file()

    here = RunDir(folder)
    if counts(here):
        return [here]
    if not here.path.is_dir():
        return []
    return sorted((RunDir(p) for p in here.path.iterdir() if p.is_dir() and counts(RunDir(p))), key=lambda r: r.name)


def _graft(target: dict[str, Any], source: dict[str, Any], parts: list[str]) -> None:
    """Set target's value at the dotted path `parts` to source's (or drop it where source has none)."""
    for part in parts[:-1]:
        target, source = target.get(part), source.get(part)
        if not isinstance(target, dict) or not isinstance(source, dict):
            return
    if parts[-1] in source:
        target[parts[-1]] = source[parts[-1]]
    else:
        target.pop(parts[-1], None)


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The first dotted key where two config dicts differ ('the top level' when they are not both tables)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the top level"
