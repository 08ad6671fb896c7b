"""The shipped data: byte-identical to its source, described, declared as package data, and read as Epoch did."""

from __future__ import annotations

import hashlib
import sys
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from isoflop.science.examples import CHINCHILLA, EXAMPLES, chinchilla

ROOT = Path(__file__).resolve().parents[2]
# sha256 of data/svg_extracted_data.csv in epoch-research/analyzing-chinchilla at commit 92258837 (its README
# in science/data/ names it)
EPOCH_SHA256 = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"


def test_the_file_is_epochs_and_says_where_it_is_from():
    path = CHINCHILLA.path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == EPOCH_SHA256
    note = (path.parent / "README.md").read_text()
    for text in (CHINCHILLA.file, "2404.10102", "epoch-research/analyzing-chinchilla", EPOCH_SHA256, "Licence"):
        assert text in note
    assert EXAMPLES.get("chinchilla") is CHINCHILLA


def test_it_is_package_data():
    # a non-editable install must carry the file: pyproject declares it for the package that reads it
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["isoflop.science"]
    for name in (f"data/{CHINCHILLA.file}", "data/README.md"):
        assert any(fnmatch(name, pattern) for pattern in patterns), name


def test_records_and_epochs_drop_rule():
    records = chinchilla()
    assert len(records) == 245
    np.testing.assert_allclose(6 * records.N * records.D, records.C, rtol=1e-12)  # D = C/(6N)
    dropped = np.argsort(records.L)[-CHINCHILLA.drop_highest:]
    # Epoch's five outliers: all near 1e19 FLOPs with under half a token per parameter
    assert np.all(np.abs(np.log10(records.C[dropped]) - 19) < 0.05)
    assert np.all(records.D[dropped] / records.N[dropped] < 0.5)
