"""(placeholder until its helper lands it)"""

from __future__ import annotations

import argparse

from isoflop.config import ConfigError


def add_run_args(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise ConfigError("sweep run", "not built yet")


def add_run_one_args(parser: argparse.ArgumentParser) -> None:
    pass


def run_one(args: argparse.Namespace) -> int:
    raise ConfigError("sweep run_one", "not built yet")


def add_status_args(parser: argparse.ArgumentParser) -> None:
    pass


def status(args: argparse.Namespace) -> int:
    raise ConfigError("sweep status", "not built yet")
