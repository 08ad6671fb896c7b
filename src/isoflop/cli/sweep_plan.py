"""(placeholder until its helper lands it)"""

from __future__ import annotations

import argparse

from isoflop.config import ConfigError


def add_plan_args(parser: argparse.ArgumentParser) -> None:
    pass


def plan(args: argparse.Namespace) -> int:
    raise ConfigError("sweep plan", "not built yet")
