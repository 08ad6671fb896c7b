"""The `isoflop` command: one entry point; each verb is one plain function (see VERBS).

Exit codes: 0 ok, 1 the run failed (e.g. a non-finite loss), 2 bad input (one line on stderr naming the key
or file and the problem; never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from isoflop.config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ConfigError):
    """Bad command-line input that is not a config key."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _verbs() -> dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None], str]]:
    from isoflop.cli import budget, export, fit, frontier, inspect, surgery, train
    from isoflop.cli import report as report_verb
    from isoflop.cli import tokenizer as tokenizer_verb

    return {
        "train": (train.train, train.add_train_args, "train a model: a recipe or config file, into --out DIR"),
        "info": (train.info, train.add_info_args, "parameter groups, FLOPs per token and the plan of a config"),
        "eval": (inspect.eval_run, inspect.add_eval_args, "validation loss and bits per byte of a run"),
        "sample": (inspect.sample, inspect.add_sample_args, "generate text from a run's model"),
        "export": (export.export, export.add_export_args, "export a run to Hugging Face format"),
        "fit": (fit.fit, fit.add_fit_args, "fit a scaling law to runs: Chinchilla approaches 1, 2, 3"),
        "plan": (budget.plan, budget.add_plan_args, "how to spend a compute budget: N_opt, D_opt, loss, and more"),
        "frontier": (frontier.frontier, frontier.add_frontier_args,
                     "the loss-vs-cost Pareto frontier of several runs and where the lead changes"),
        "upcycle": (surgery.upcycle, surgery.add_upcycle_args,
                    "turn a dense run into an MoE run (sparse upcycling) that `train DIR --resume` continues"),
        "expand": (surgery.expand, surgery.add_expand_args,
                   "add experts to an MoE run for new data (lifelong expansion), old experts optionally frozen"),
        "report": (report_verb.report, report_verb.add_report_args,
                   "run a study (its runs, a measurement) and write report.md, results.json and a plot"),
        "tokenizer": (tokenizer_verb.tokenizer, tokenizer_verb.add_tokenizer_args,
                      "train, apply and measure tokenizers: train|encode|decode|stats"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="isoflop", description="Compute-efficient language-model training.")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for name, (func, add_args, help_text) in _verbs().items():
        verb = sub.add_parser(name, help=help_text, description=help_text)
        add_args(verb)
        verb.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"isoflop {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"isoflop {args.verb}: interrupted", file=sys.stderr)
        return 130
