"""Studies: a claim from the source papers as a set of runs plus a measurement (`isoflop report STUDY`).

A study declares its runs (name -> ExperimentConfig, each derived from a baseline recipe by small changes;
`smoke=True` shrinks them to seconds, for tests), optionally writes inputs the runs need (`prepare_inputs`,
e.g. a generated corpus), and `measure`s the finished run directories into a report: plain data (a dict in the
shape `science/report.py` documents: claim, setting, table columns and rows, plot panels), which `runner.py`
renders. Studies never draw; they may use `isoflop.train` to load models and evaluate them.

The package depends on the core (train, recipes, science), never the reverse: nothing outside `studies/` and
the `report` verb imports a study.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from isoflop.registry import Registry
from isoflop.rundir import RunDir
from isoflop.train.spec import ExperimentConfig


class Study:
    """Base of the studies: a name, a one-line description, the claim; runs, prepare_inputs, measure."""

    name: ClassVar[str]
    description: ClassVar[str]
    """One line, for `isoflop report --list`."""
    claim: ClassVar[str]
    """The claim under test, as the source states it."""

    def prepare_inputs(self, out: Path, *, smoke: bool, progress: Callable[[str], None] | None = None) -> None:
        """Write any inputs the runs read (under `out`) before training, telling `progress` what it does; most
        studies need none. `runs` is asked again after it, so a run may use what it made."""

    def execute(self, out: Path, *, smoke: bool, overrides: list[str], jobs: int,
                progress: Callable[[str], None]) -> dict[str, RunDir]:
        """Train the study's runs (what is not done yet) and return every run directory by name. The default
        trains `runs` one after another into OUT/runs/<name> (runner.train_runs, which ignores `jobs`); a study
        made of sweeps plans and runs them with the sweep executor instead."""
        from isoflop.studies.runner import train_runs

        return train_runs(self, out, smoke=smoke, overrides=overrides, progress=progress)

    def runs(self, out: Path, *, smoke: bool) -> dict[str, ExperimentConfig]:
        """The runs to train, by name (each trains into `out/runs/<name>`)."""
        raise NotImplementedError

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        """The report data from the finished runs (see science/report.py for its shape)."""
        raise NotImplementedError


_PACKAGE = "isoflop.studies"
STUDIES: Registry[type[Study]] = Registry("study", {
    "rope-extrapolation": f"{_PACKAGE}.rope_extrapolation:RopeExtrapolation",
    "sign-optimizer-embeddings": f"{_PACKAGE}.sign_optimizer_embeddings:SignOptimizerEmbeddings",
    "cosine-stretch": f"{_PACKAGE}.cosine_stretch:CosineStretch",
    "compressed-text": f"{_PACKAGE}.compressed_text:CompressedText",
    "sparse-isoflop": f"{_PACKAGE}.sparse_isoflop:SparseIsoflop",
    "isoflop-sweep": f"{_PACKAGE}.isoflop_sweep:IsoflopSweep",
})


def study_names() -> dict[str, str]:
    """Study name -> one-line description."""
    return {name: STUDIES.get(name).description for name in STUDIES}


def get_study(name: str) -> Study:
    """A new Study object of `name`; ConfigError (with a suggestion) for an unknown name."""
    study = STUDIES.get(name)()
    assert study.name == name, f"{study.name!r} registered as {name!r}"
    return study
