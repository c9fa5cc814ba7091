"""`agentdeck bench WHAT`: the benchmarks, registered on the command line here.

Each bench is a module with one shape: `HELP`, `add_arguments(parser)` and
`run(ctx, args) -> exit code`; its common options and its rounds come from
app/bench/harness.py. No bench module imports textual at its top: `bench tui` imports the
cockpit inside its run, so building the command line never does.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from app.args import Parser
from app.context import Context

# name -> module, in the order `agentdeck bench --help` lists them.
BENCHES = {
    "bus": "app.bench.bus",
    "inference": "app.bench.inference",
    "kv": "app.bench.kv",
    "policy": "app.bench.policy",
    "sampling": "app.bench.sampling",
    "crew": "app.bench.crew",
    "recall": "app.bench.recall",
    "checkpoint": "app.bench.checkpoint",
    "tui": "app.bench.tui",
}

HELP = "benchmarks: " + ", ".join(BENCHES)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench` and its subcommands to the top-level subparsers."""
    p = sub.add_parser("bench", help=HELP, description=HELP)
    p.set_defaults(handler=None)
    bench = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True, parser_class=Parser)
    for name, path in BENCHES.items():
        module = importlib.import_module(path)
        b = bench.add_parser(name, help=module.HELP, description=module.HELP)
        b.set_defaults(handler=_model_resolved(module.run))
        module.add_arguments(b)


def _model_resolved(run: Callable[[Context, argparse.Namespace], int]) -> Callable[..., int]:
    """A bench with --model gets it as a file: a model name (`agentdeck models`) is looked
    up in this command's home, once, before anything is measured."""
    def handler(ctx: Context, args: argparse.Namespace) -> int:
        if hasattr(args, "model"):
            from agents.inference import resolve_model_path

            args.model_given = args.model is not None  # a backend's own model yields to --model only
            args.model = str(resolve_model_path(args.model, ctx.config.inference.model, home=ctx.home))
        return run(ctx, args)
    return handler
