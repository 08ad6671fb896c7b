"""The sweep executor's cost: its wall time against the sum of its runs' own times, and --jobs 2 against --jobs 1.

1. Overhead. Plans the isoflop-sweep study's grid-mode sweep (or `--spec FILE`) into a fresh folder, runs it
   with `--jobs 1` and compares the driver's wall time with the sum of the runs' own wall times (each run's
   RunRecord.wall_time_s: from the trainer's start to its record, evaluations and checkpoints included). The
   difference is what the sweep adds: starting a process per run, importing torch, reading the token cache,
   building the model, bookkeeping. Target <= 5 %.
2. Throughput. Six equal tiny grid runs, trained with --jobs 1 and then --jobs 2 into fresh folders (the token
   cache is warm for both); counted training FLOPs per wall second of each, and the ratio.

Prints one JSON line per measurement.

    python benchmarks/sweep_overhead.py [--spec sweep.toml] [--smoke] [--skip overhead|throughput]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from isoflop.studies.isoflop_sweep import IsoflopSweep
from isoflop.sweep.grid import design
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.local import run_local
from isoflop.sweep.spec import parse_spec

THROUGHPUT_SPEC = """\
base = "tiny"
budgets = [{budget}]
sizes = [2e5, 2e5, 2e5, 2e5, 2e5, 2e5]
hparams = "fixed"
seeds = [0]
set = ["data.tokenizer.kind=byte", "data.seq_len=128", "data.max_bytes=4000000"]

[shape]
head_dim = 16
aspect = 20
tolerance = 0.1
"""


def timed_sweep(text: str, folder: Path, jobs: int) -> tuple[float, SweepDir]:
    sweep = SweepDir(folder)
    sweep.place(text, design(parse_spec(text, where="benchmark spec"), folder))
    start = time.perf_counter()
    summary = run_local(sweep, jobs=jobs)
    wall = time.perf_counter() - start
    assert summary.exit_code() == 0, summary.lines()
    return wall, sweep


def overhead(text: str, root: Path) -> dict:
    wall, sweep = timed_sweep(text, root / "overhead", jobs=1)
    plan = sweep.read_plan()
    own = [sweep.run_dir(r.key).read_record().wall_time_s for r in plan.runs]
    return {"benchmark": "sweep_overhead", "runs": len(own), "driver_wall_s": round(wall, 2),
            "runs_wall_s": round(sum(own), 2), "overhead": round(wall / sum(own) - 1.0, 4), "target": 0.05}


def throughput(budget: float, root: Path) -> dict:
    text = THROUGHPUT_SPEC.format(budget=budget)
    out = {"benchmark": "sweep_jobs_throughput", "budget": budget}
    # sizes repeat, so the six runs share a key unless seeds differ: give each its own seed instead
    text = text.replace("sizes = [2e5, 2e5, 2e5, 2e5, 2e5, 2e5]", "sizes = [2e5]").replace(
        "seeds = [0]", "seeds = [0, 1, 2, 3, 4, 5]")
    for jobs in (1, 2):
        wall, sweep = timed_sweep(text, root / f"jobs{jobs}", jobs=jobs)
        flops = sum(sweep.run_dir(r.key).read_record().flops for r in sweep.read_plan().runs)
        out[f"jobs{jobs}_wall_s"] = round(wall, 2)
        out[f"jobs{jobs}_flops_per_s"] = flops / wall
    out["speedup"] = round(out["jobs2_flops_per_s"] / out["jobs1_flops_per_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, help="a sweep.toml to measure the overhead on (default: the study's grid)")
    parser.add_argument("--smoke", action="store_true", help="the study's smoke-sized sweep (seconds; not a measurement)")
    parser.add_argument("--skip", choices=("overhead", "throughput"), action="append", default=[])
    args = parser.parse_args()
    study = IsoflopSweep()
    text = args.spec.read_text() if args.spec else study.spec_text("grid", smoke=args.smoke)
    with tempfile.TemporaryDirectory(prefix="sweep_overhead_") as tmp:
        root = Path(tmp)
        if "overhead" not in args.skip:
            print(json.dumps(overhead(text, root)), flush=True)
        if "throughput" not in args.skip:
            print(json.dumps(throughput(2e10 if args.smoke else 5e11, root)), flush=True)


if __name__ == "__main__":
    main()
