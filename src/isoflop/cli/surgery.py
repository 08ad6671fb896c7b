"""`isoflop upcycle`: turn a dense run into an MoE run that `isoflop train DIR --resume` continues."""

from __future__ import annotations

import argparse
import sys

from isoflop.cli.common import require_run_dir
from isoflop.config import ConfigError


def add_upcycle_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="a dense run with at least one checkpoint")
    parser.add_argument("--out", required=True, metavar="DIR", help="the MoE run directory to write")
    parser.add_argument("--experts", type=int, required=True, help="experts per MoE layer")
    parser.add_argument("--top-k", type=int, required=True, help="experts per token")
    parser.add_argument("--every", type=int, default=2,
                        help="MoE in every k-th block, (i + 1) %% k == 0 (default 2: every other, as the paper)")
    parser.add_argument("--router", default="softmax_topk",
                        help="router kind: softmax_topk (default), sigmoid_bias or expert_choice")
    parser.add_argument("--no-renormalize", action="store_true",
                        help="keep raw top-k softmax gates (Qwen/OLMoE); the step-0 output is then scaled")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to each expert copy")
    parser.add_argument("--reuse-optimizer", action="store_true",
                        help="copy the MLP's optimizer moments into every expert and continue the step count")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps to train after upcycling (default: as many as the dense run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new routers' initialisation")


def upcycle(args: argparse.Namespace) -> int:
    from isoflop.nn.ffn_config import RouterConfig
    from isoflop.surgery.upcycle import upcycle as run_upcycle

    run = require_run_dir(args.run)
    router_data: dict = {"kind": args.router}
    if args.no_renormalize:
        if args.router == "expert_choice":
            raise ConfigError("--no-renormalize", "expert choice has no renormalisation to turn off")
        router_data["renormalize"] = False
    try:
        router = RouterConfig.from_dict(router_data)
    except ConfigError as e:
        raise e.under("--router") from None
    try:
        record = run_upcycle(run, args.out, experts=args.experts, top_k=args.top_k, every=args.every,
                             router=router, noise=args.noise, reuse_optimizer=args.reuse_optimizer,
                             steps=args.steps, seed=args.seed)
    except ConfigError as e:
        if e.key in {"experts", "top_k", "every"}:
            raise ConfigError(f"--{e.key.replace('_', '-')}", e.problem) from None
        raise
    print(f"upcycled {args.run} (step {record['source_step']}) -> {args.out}: MoE in blocks "
          f"{record['converted_layers']}, {args.experts} experts, top-{args.top_k}; router seed {args.seed}. "
          f"Train it with: isoflop train {args.out} --resume")
    return 0


def add_expand_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="an MoE run with at least one checkpoint")
    parser.add_argument("--out", required=True, metavar="DIR", help="the expanded run directory to write")
    parser.add_argument("--new-experts", type=int, required=True, help="experts to add to every MoE layer")
    parser.add_argument("--freeze-old", action="store_true",
                        help="freeze the old experts and their router rows (no gradient, bitwise unchanged)")
    parser.add_argument("--distill", type=float, default=0.0, metavar="LAMBDA",
                        help="weight of KL(old model || new model) on the new data (0: the plain LM loss)")
    parser.add_argument("--entry-rate", type=float, default=1e-2,
                        help="how fast the new experts' selection bias rises from -1 per optimizer step")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps of the new phase (default: as many as the source run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new experts' initialisation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for the new phase, e.g. data.corpus=NEW_DATA")


def expand(args: argparse.Namespace) -> int:
    from isoflop.surgery.expand import expand as run_expand

    run = require_run_dir(args.run)
    record = run_expand(run, args.out, new_experts=args.new_experts, freeze_old=args.freeze_old,
                        distill=args.distill, entry_rate=args.entry_rate, steps=args.steps, seed=args.seed,
                        overrides=args.overrides)
    print(f"expanded {args.run}: {record['old_experts']} + {record['new_experts']} experts per MoE layer"
          f"{', old ones frozen' if args.freeze_old else ''} -> {args.out}. "
          f"Train it with: isoflop train {args.out} --resume")
    if record["softmax_order_may_change"]:
        print("note: the old experts' selection biases differ, so the new router rows' share of the softmax can "
              "change which old experts a token picks (outputs on old data are not exactly preserved); "
              "a sigmoid_bias router avoids this", file=sys.stderr)
    return 0
