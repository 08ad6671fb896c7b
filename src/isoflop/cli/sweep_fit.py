"""(placeholder until its helper lands it)"""

from __future__ import annotations

import argparse

from isoflop.config import ConfigError


def add_fit_args(parser: argparse.ArgumentParser) -> None:
    pass


def fit(args: argparse.Namespace) -> int:
    raise ConfigError("sweep fit", "not built yet")


def add_report_args(parser: argparse.ArgumentParser) -> None:
    pass


def report(args: argparse.Namespace) -> int:
    raise ConfigError("sweep report", "not built yet")


def add_predict_args(parser: argparse.ArgumentParser) -> None:
    pass


def predict(args: argparse.Namespace) -> int:
    raise ConfigError("sweep predict", "not built yet")
