"""Run records for the science verbs: (N, D, C, L) points and per-run loss curves.

Two kinds of input:

- a run directory (isoflop.rundir): its run record, written last when the run is complete, gives one point,
  and its metrics log the loss curve; a folder of run directories (a sweep) counts as its runs;
- a table, `.csv` / `.tsv` / `.jsonl`, one point per row, with a column mapping such as
  `"N=Model Size,C=Training FLOP,L=loss"` (our names N, D, C, L on the left, the table's on the right).

Conventions (Hoffmann et al. 2022, arXiv 2203.15556, §2): N is the parameter count, D the training tokens,
C the training FLOPs, L the loss in nats per token. When only one of D and C is given, the other follows from
C = 6·N·D — as Besiroglu et al. 2024 (arXiv 2404.10102) do for the transcribed Chinchilla points.

Bad input raises `RecordsError` (a ValueError) with one line naming the file, key or column, and the line.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isoflop.errors import ConfigError
from isoflop.rundir import EVAL, POINT_KEYS, TRAIN, RunDir, RunRecord, find_runs
from isoflop.science.errors import ScienceError

# Our names and the table column names tried by default
# (case-insensitively, in order).
FIELDS = ("N", "D", "C", "L")
TABLE_DEFAULTS = {"N": ("N",), "D": ("D",), "C": ("C",), "L": ("L", "loss")}
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None}

# metrics-log cost axes a Curve may carry; gpu_hours = elapsed_s * world_size / 3600 (one device per rank).
COSTS = ("step", "tokens", "flops", "elapsed_s", "gpu_hours")


RecordsError = ScienceError
"""Unreadable or unusable records: one line naming the file/key/column and the problem (CLI exit 2)."""

@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class Records:
    """Training runs as points: parameters N, tokens D, FLOPs C, loss L (aligned float64 arrays)."""

    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    L: np.ndarray
    run: tuple[str, ...] | None = None
    """A name per point: the run directory's name, the table's `run` column, or FILE:LINE."""

    def __len__(self) -> int:
        return len(self.L)

    def select(self, mask: np.ndarray) -> Records:
        """The points where `mask` (boolean or integer index) selects."""
        idx = np.arange(len(self))[mask]
        run = None if self.run is None else tuple(self.run[i] for i in idx)
        return Records(self.N[idx], self.D[idx], self.C[idx], self.L[idx], run)


@dataclass(frozen=True, eq=False)  # holds arrays: == would be ambiguous, so it is identity
class Curve:
    """One model's loss curve, points in training order.

    `cost` maps a cost axis name ("step", "tokens", "flops", "elapsed_s", "gpu_hours" for run directories;
    "cost" for tables) to an array aligned with `loss`. N is None when the source does not give it.
    """

    name: str
    N: float | None
    loss: np.ndarray
    cost: Mapping[str, np.ndarray] = field(default_factory=dict)

    def x(self, axis: str) -> np.ndarray:
        """The cost array named `axis`; RecordsError naming the curve when it has none."""
        if axis in self.cost:
            return self.cost[axis]
        if axis == "flops" and "tokens" in self.cost and self.N is not None:
            return 6.0 * self.N * self.cost["tokens"]  # C = 6ND (Kaplan et al. 2020, §2.1)
        have = ", ".join(self.cost) or "none"
        raise RecordsError(f"{self.name}: no cost axis '{axis}' (it has: {have})")


# ---------------------------------------------------------------------------------------------- mapping


def parse_columns(columns: str | None) -> dict[str, str]:
    """'N=Model Size,C=Training FLOP,L=loss' -> {"N": "Model Size", ...}; keys must be N, D, C, L or run."""
    if not columns:
        return {}
    mapping: dict[str, str] = {}
    for part in columns.split(","):
        key, sep, name = part.partition("=")
        key, name = key.strip(), name.strip()
        if not sep or not name:
            raise RecordsError(f"--columns: '{part.strip()}' is not KEY=COLUMN (e.g. 'N=Model Size,L=loss')")
        if key not in (*FIELDS, "run"):
            raise RecordsError(f"--columns: unknown key '{key}' (keys: N, D, C, L, run)")
        if key in mapping:
            raise RecordsError(f"--columns: key '{key}' given twice")
        mapping[key] = name
    return mapping


def _number(value: Any, where: str, column: str) -> float:
    """`value` as a positive finite float, or RecordsError naming `where` and `column`."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise RecordsError(f"{where}: '{column}' is {'empty' if value in (None, '') else repr(value)}, not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RecordsError(f"{where}: '{column}' is {value!r}, not a number") from None
    if not math.isfinite(x):
        raise RecordsError(f"{where}: '{column}' is {x}, not finite")
    if x <= 0:
        raise RecordsError(f"{where}: '{column}' is {x:g}, not positive")
    return x


def _complete(n: float, d: float | None, c: float | None, where: str) -> tuple[float, float]:
    """(D, C) with the missing one from C = 6ND."""
    if d is None and c is None:
        raise RecordsError(f"{where}: needs D (tokens) or C (FLOPs); neither is mapped")
    if d is None:
        d = c / (6.0 * n)
    if c is None:
        c = 6.0 * n * d
    return d, c


# ---------------------------------------------------------------------------------------------- points


def load_records(paths: Sequence[str | Path], *, columns: str | None = None, min_points: int = 1,
                 n_key: str | None = None) -> Records:
    """Read points from run directories (or folders of them) and CSV/TSV/JSONL tables, in the order given.

    `columns` maps N, D, C, L (and `run`) to table columns, or to run record keys for run directories
    (defaults: rundir.POINT_KEYS: N_total, D_tokens, flops, val_loss). `n_key` is shorthand for the N key of run directories,
    e.g. "N_non_embedding" (Kaplan et al. 2020 count non-embedding parameters; Hoffmann et al. 2022 all).
    `min_points` is the fewest points the caller's fit can use.
    """
    mapping = parse_columns(columns)
    if n_key is not None:
        if "N" in mapping and mapping["N"] != n_key:
            raise RecordsError(f"--n-key {n_key} and --columns N={mapping['N']} disagree")
        mapping["N"] = n_key
    if not paths:
        raise RecordsError("no input: give run directories or a CSV/JSONL table")
    rows: list[tuple[float, float, float, float, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            rows.extend(_run_point(run, mapping) for run in _run_dirs(path))
        elif path.is_file():
            rows.extend(_table_points(path, mapping))
        else:
            raise RecordsError(f"{path}: no such file or directory")
    if len(rows) < max(min_points, 1):
        label = str(paths[0]) + (f" (and {len(paths) - 1} more)" if len(paths) > 1 else "")
        raise RecordsError(f"{label}: {len(rows)} points, but the fit needs at least {min_points}")
    n, d, c, loss, names = zip(*rows, strict=True)
    return Records(np.array(n), np.array(d), np.array(c), np.array(loss), tuple(names))


def _run_dirs(path: Path) -> list[RunDir]:
    """`path` itself when it holds a finished run, else its immediate subfolders that do (a sweep)."""
    runs = find_runs(path)
    if runs:
        return runs
    if RunDir(path).is_run():
        raise RecordsError(f"{path}: the run is not complete (no run record yet)")
    raise RecordsError(f"{path}: no finished run here nor in its subfolders (not a run directory)")


def _record(run: RunDir) -> RunRecord:
    try:
        return run.read_record()
    except ConfigError as e:
        raise RecordsError(str(e)) from None


def _run_point(run: RunDir, mapping: Mapping[str, str]) -> tuple[float, float, float, float, str]:
    record, where = _record(run), str(run.record_file)
    keys = record.to_dict()
    value: dict[str, float] = {}
    for key in FIELDS:
        name = mapping.get(key, POINT_KEYS[key])
        if name not in keys:
            raise RecordsError(f"{where}: no key '{name}' for {key} (keys: {', '.join(keys)})")
        value[key] = _number(keys[name], where, name)
    return value["N"], value["D"], value["C"], value["L"], run.name


def _table_rows(path: Path) -> tuple[list[str], Iterable[tuple[int, Mapping[str, Any]]]]:
    """(column names, (line number, row) pairs) of a CSV/TSV/JSONL table."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise RecordsError(f"{path}: unknown table format '{suffix}' (use .csv, .tsv or .jsonl)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not a column
    except (OSError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path}: unreadable ({e.__class__.__name__})") from None
    delimiter = TABLE_SUFFIXES[suffix]
    if delimiter is not None:
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = [(reader.line_num, row) for row in reader
                if any(isinstance(v, str) and v.strip() for v in row.values())]
        return header, rows
    header: list[str] = []
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordsError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise RecordsError(f"{path} line {lineno}: expected a JSON object, found {type(row).__name__}")
        header.extend(k for k in row if k not in header)
        rows.append((lineno, row))
    return header, rows


def _resolve(header: Sequence[str], mapping: Mapping[str, str], path: Path,
             defaults: Mapping[str, tuple[str, ...]], required: Iterable[str]) -> dict[str, str | None]:
    """Our key -> the table's column name (None when an optional key is absent)."""
    lower = {h.lower(): h for h in reversed(header)}
    present = ", ".join(header) or "none"
    resolved: dict[str, str | None] = {}
    for key, candidates in defaults.items():
        if key in mapping:
            if mapping[key] not in header:
                raise RecordsError(f"{path}: no column '{mapping[key]}' for {key} (columns: {present})")
            resolved[key] = mapping[key]
            continue
        resolved[key] = next((lower[c.lower()] for c in candidates if c.lower() in lower), None)
        if resolved[key] is None and key in required:
            tried = " or ".join(f"'{c}'" for c in candidates)
            raise RecordsError(f"{path}: no column {tried} for {key} (columns: {present}); map one with --columns")
    return resolved


def _table_points(path: Path, mapping: Mapping[str, str]) -> list[tuple[float, float, float, float, str]]:
    header, rows = _table_rows(path)
    if not rows:
        raise RecordsError(f"{path}: no data rows")
    cols = _resolve(header, mapping, path, {**TABLE_DEFAULTS, "run": ("run",)}, required=("N", "L"))
    if cols["D"] is None and cols["C"] is None:
        raise RecordsError(f"{path}: no column for D (tokens) or C (FLOPs) (columns: {', '.join(header)}); "
                           "map one with --columns")
    points = []
    for lineno, row in rows:
        where = f"{path} line {lineno}"

        def get(key: str, where: str = where, row: Mapping[str, Any] = row) -> float | None:
            name = cols[key]
            return None if name is None else _number(row.get(name), where, name)

        n, loss = get("N"), get("L")
        d, c = _complete(n, get("D"), get("C"), where)
        name = str(row.get(cols["run"])) if cols["run"] else f"{path.name}:{lineno}"
        points.append((n, d, c, loss, name))
    return points


# ---------------------------------------------------------------------------------------------- curves


def load_curves(run_dirs: Sequence[str | Path], *, which: str = "train", n_key: str = "N_total") -> list[Curve]:
    """Loss curves of run directories (or folders of them) from their metrics logs; runs need not be complete.

    which="train" gives the training loss at each logged step, with every cost axis of COSTS;
    which="val" gives the evaluations (val_loss), their tokens/flops/elapsed_s interpolated in step from the
    training records (tokens and flops are linear in step; elapsed time is near enough so).
    N is read from the run record (`n_key`), else from the plan's params, written before training starts.
    """
    if which not in ("train", "val"):
        raise RecordsError(f"which: '{which}' is not 'train' or 'val'")
    if not run_dirs:
        raise RecordsError("no input: give run directories")
    curves = []
    for raw in run_dirs:
        path = Path(raw)
        if not path.is_dir():
            raise RecordsError(f"{path}: no such run directory")
        runs = find_runs(path, complete=False)
        if not runs:
            raise RecordsError(f"{path}: no metrics log here nor in its subfolders (not a run directory)")
        curves.extend(_curve(run, which, n_key) for run in runs)
    return curves


def _run_meta(run: RunDir, n_key: str) -> tuple[float, int]:
    """(N, world_size) from the run record, else from the plan."""
    if run.is_complete():
        keys, where = _record(run).to_dict(), str(run.record_file)
        if n_key not in keys:
            raise RecordsError(f"{where}: no key '{n_key}' (keys: {', '.join(keys)})")
        return _number(keys[n_key], where, n_key), int(keys["world_size"])
    try:
        plan = run.read_plan()
    except ConfigError as e:
        raise RecordsError(str(e)) from None
    params = plan.get("params", {}) if isinstance(plan, dict) else {}
    key = n_key.removeprefix("N_")  # the record's N_total is the plan's params.total
    if not isinstance(params, dict) or key not in params:
        raise RecordsError(f"{run.plan_file}: no params.{key} for {n_key}")
    return _number(params[key], str(run.plan_file), f"params.{key}"), int(plan.get("world_size", 1))


def _curve(run: RunDir, which: str, n_key: str) -> Curve:
    n, world_size = _run_meta(run, n_key)
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    try:
        numbered = run.metrics.numbered_records()
    except ConfigError as e:
        raise RecordsError(str(e)) from None
    for where, record in numbered:
        kind = record.get("kind", TRAIN)
        if kind in (TRAIN, EVAL):
            step = int(_number(record.get("step"), where, "step"))
            (train if kind == TRAIN else evals)[step] = record | {"_where": where}  # a resumed step: last wins
    path = run.metrics.path
    if not train:
        raise RecordsError(f"{path}: no training records")
    steps = np.array(sorted(train), dtype=float)
    rows = [train[int(s)] for s in steps]
    cost = {"step": steps}
    for key in ("tokens", "flops", "elapsed_s"):
        cost[key] = np.array([_number(r.get(key), r["_where"], key) for r in rows])
    cost["gpu_hours"] = cost["elapsed_s"] * world_size / 3600.0
    if which == "train":
        loss = np.array([_number(r.get("loss"), r["_where"], "loss") for r in rows])
        return Curve(run.name, n, loss, cost)
    if not evals:
        raise RecordsError(f"{path}: no eval records (val_loss)")
    val_steps = np.array(sorted(evals), dtype=float)
    loss = np.array([_number(evals[int(s)].get("val_loss"), evals[int(s)]["_where"], "val_loss") for s in val_steps])
    # prepend the origin so that an evaluation before the first logged step interpolates from zero
    grid = np.concatenate([[0.0], steps])
    val_cost = {"step": val_steps}
    for key in ("tokens", "flops", "elapsed_s", "gpu_hours"):
        val_cost[key] = np.interp(val_steps, grid, np.concatenate([[0.0], cost[key]]))
    return Curve(run.name, n, loss, val_cost)


def load_cost_curves(paths: Sequence[str | Path], *, columns: str | None = None) -> list[Curve]:
    """Loss-vs-cost tables for the frontier: one model per file, or a `model` column naming each row's model.

    `columns` maps `cost`, `L` and optionally `model` and `N` to the table's names (defaults: cost, L/loss,
    model, N), e.g. "cost=Hours,L=Loss" for the LLaMA curves digitised in "Chinchilla's death".
    The cost is stored under the axis name "cost".
    """
    mapping: dict[str, str] = {}
    for part in (columns or "").split(","):
        if not part.strip():
            continue
        key, sep, name = part.partition("=")
        if not sep or key.strip() not in ("cost", "L", "model", "N") or not name.strip():
            raise RecordsError(f"--columns: '{part.strip()}' is not KEY=COLUMN with KEY cost, L, model or N")
        mapping[key.strip()] = name.strip()
    if not paths:
        raise RecordsError("no input: give loss-vs-cost tables")
    curves: list[Curve] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise RecordsError(f"{path}: no such file")
        header, rows = _table_rows(path)
        if not rows:
            raise RecordsError(f"{path}: no data rows")
        defaults = {"cost": ("cost",), "L": ("L", "loss"), "model": ("model",), "N": ("N",)}
        cols = _resolve(header, mapping, path, defaults, required=("cost", "L"))
        groups: dict[str, list[tuple[float, float, float | None]]] = {}
        for lineno, row in rows:
            where = f"{path} line {lineno}"
            model = str(row.get(cols["model"])) if cols["model"] else path.stem
            size = _number(row.get(cols["N"]), where, cols["N"]) if cols["N"] else None
            groups.setdefault(model, []).append(
                (_number(row.get(cols["cost"]), where, cols["cost"]), _number(row.get(cols["L"]), where, cols["L"]),
                 size))
        for model, points in groups.items():
            sizes = {p[2] for p in points}
            if len(sizes) > 1:
                raise RecordsError(f"{path}: model '{model}' has several sizes in column '{cols['N']}'")
            curves.append(Curve(model, sizes.pop(), np.array([p[1] for p in points]),
                                {"cost": np.array([p[0] for p in points])}))
    names = [c.name for c in curves]
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise RecordsError(f"model '{dup}' appears in more than one table")
    return curves
