"""The `isoflop` command: one entry point; each verb is one plain function with its own argument parser.

Exit codes: 0 ok, 1 the run failed (e.g. a non-finite loss), 2 bad input (one line on stderr naming the key
or file and the problem; never a traceback), 3 preempted: a stop signal (SIGTERM, SIGUSR1) arrived during
training, the step reached was checkpointed, and `--resume` continues (a scheduler may requeue on it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from isoflop.config import ConfigError
from isoflop.registry import Registry

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PREEMPTED = 0, 1, 2, 3


@dataclass(frozen=True)
class Verb:
    """A verb: its function `run(args) -> exit code` and the function adding its arguments, as "module:name"
    text (imported only when the parser is built), and its one-line help."""

    run: str
    add_args: str
    help: str

    def load(self) -> tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]:
        def resolve(ref: str) -> Callable:
            module, _, name = ref.partition(":")
            return getattr(importlib.import_module(f"isoflop.cli.{module}"), name)

        return resolve(self.run), resolve(self.add_args)


VERBS: Registry[Verb] = Registry("verb", {
    "train": Verb("train:train", "train:add_train_args", "train a model: a recipe or config file, into --out DIR"),
    "info": Verb("train:info", "train:add_info_args", "parameter groups, FLOPs per token and the plan of a config"),
    "eval": Verb("inspect:eval_run", "inspect:add_eval_args", "validation loss and bits per byte of a run"),
    "sample": Verb("inspect:sample", "inspect:add_sample_args", "generate text from a run's model"),
    "export": Verb("export:export", "export:add_export_args", "export a run to Hugging Face format"),
    "fit": Verb("fit:fit", "fit:add_fit_args", "fit a scaling law to runs: Chinchilla approaches 1, 2, 3"),
    "plan": Verb("budget:plan", "budget:add_plan_args", "how to spend a compute budget: N_opt, D_opt, loss, and more"),
    "frontier": Verb("frontier:frontier", "frontier:add_frontier_args",
                     "the loss-vs-cost Pareto frontier of several runs and where the lead changes"),
    "upcycle": Verb("surgery:upcycle", "surgery:add_upcycle_args",
                    "turn a dense run into an MoE run (sparse upcycling) that `train DIR --resume` continues"),
    "expand": Verb("surgery:expand", "surgery:add_expand_args",
                   "add experts to an MoE run for new data (lifelong expansion), old experts optionally frozen"),
    "report": Verb("report:report", "report:add_report_args",
                   "run a study (its runs, a measurement) and write report.md, results.json and a plot"),
    "sweep": Verb("sweep:sweep", "sweep:add_sweep_args",
                  "plan, run, fit and report a scaling-law sweep: plan|run|status|fit|report|predict"),
    "tokenizer": Verb("tokenizer:tokenizer", "tokenizer:add_tokenizer_args",
                      "train, apply and measure tokenizers: train|encode|decode|stats"),
})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="isoflop", description="Compute-efficient language-model training.")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for name, verb in VERBS.items():
        run, add_args = verb.load()
        verb_parser = sub.add_parser(name, help=verb.help, description=verb.help)
        add_args(verb_parser)
        verb_parser.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in VERBS:  # one line with a suggestion, exit 2
        try:
            VERBS.get(argv[0])
        except ConfigError as e:
            print(f"isoflop: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"isoflop {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"isoflop {args.verb}: interrupted", file=sys.stderr)
        return 130
