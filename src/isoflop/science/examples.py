"""Data sets shipped with isoflop (files in science/data/, described in its README.md), for `isoflop fit
--example NAME` and for checks against published results that must run without a network."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from isoflop.registry import Registry

if TYPE_CHECKING:
    from isoflop.science.records import Records


@dataclass(frozen=True)
class Example:
    """A table of runs in science/data/, with how its columns map to N, D, C, L and which runs its authors left
    out before an approach 3 fit."""

    file: str
    columns: str
    drop_highest: int
    description: str

    def path(self) -> Path:
        return Path(str(resources.files("isoflop.science") / "data" / self.file))

    def records(self) -> Records:
        """All the table's runs (none dropped)."""
        from isoflop.science.records import load_records

        return load_records([self.path()], columns=self.columns)


CHINCHILLA = Example(
    file="epoch_chinchilla_svg_extracted_data.csv",
    columns="N=Model Size,C=Training FLOP,L=loss",  # no token column: D = C/(6N), as Epoch AI use
    drop_highest=5,  # Epoch AI's `nr_of_models_excluded` (data_analysis.ipynb)
    description="Epoch AI's transcription of Hoffmann et al. 2022's runs (Besiroglu et al. 2024): 245 runs")

EXAMPLES: Registry[Example] = Registry("example data set", {"chinchilla": CHINCHILLA})


def chinchilla() -> Records:
    """The 245 Chinchilla runs as Records (N, D = C/(6N), C, L); fit them with `drop_highest=CHINCHILLA.drop_highest`
    to follow Epoch AI."""
    return CHINCHILLA.records()
