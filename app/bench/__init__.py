"""`agentdeck bench WHAT`: the benchmarks, registered on the command line here."""

from __future__ import annotations

import argparse

from app.args import Parser, at_least_one


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench` and its subcommands to the top-level subparsers."""
    from app.bench import bus as bench_bus
    from app.bench import crew as bench_crew
    from app.bench import inference as bench_inference
    from app.bench import kv as bench_kv
    from app.bench import policy as bench_policy
    from app.bench import sampling as bench_sampling

    p = sub.add_parser("bench", help=HELP, description=HELP)
    p.set_defaults(handler=None)
    bench = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True, parser_class=Parser)
    b = bench.add_parser("bus", help="durable events/s and latency vs raw sqlite3")
    b.set_defaults(handler=bench_bus.cmd_bench_bus)
    bench_bus.add_arguments(b, at_least_one)
    b = bench.add_parser("crew", help="how well the crew keeps the engine busy (real model)")
    b.set_defaults(handler=bench_crew.cmd_bench_crew)
    bench_crew.add_arguments(b, at_least_one)
    b = bench.add_parser("kv", help="what idle caches cost running sequences, per KV layout")
    b.set_defaults(handler=_bench_kv)
    bench_kv.add_arguments(b, at_least_one)
    b = bench.add_parser("policy", help="how long the permission gate takes to decide")
    b.set_defaults(handler=bench_policy.cmd_bench_policy)
    bench_policy.add_arguments(b, at_least_one)
    b = bench.add_parser("sampling", help="per-token sampler cost, plain and under a JSON schema")
    b.set_defaults(handler=bench_sampling.cmd_bench_sampling)
    bench_sampling.add_arguments(b, at_least_one)
    b = bench.add_parser("tui", help="what the cockpit costs: loop lag, redraws, CPU, engine tokens/s")
    b.set_defaults(handler=_bench_tui)
    _add_bench_tui_arguments(b)
    b = bench.add_parser("inference", help="continuous batching vs one-at-a-time")
    b.set_defaults(handler=_bench_inference)
    bench_inference.add_arguments(b, at_least_one)


HELP = "benchmarks: bus, inference, kv, policy, sampling, crew, tui"


def _add_bench_tui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--seconds", type=at_least_one, default=10, help="how long the synthetic streams run")
    p.add_argument("--rounds", type=at_least_one, default=3, help="engine rounds per side, interleaved")
    p.add_argument("--tokens", type=at_least_one, default=96, help="tokens per engine request")
    p.add_argument("--model", metavar="PATH", help="GGUF model (default: config, else the embedded SmolLM2)")


def _bench_tui(ctx: object, args: argparse.Namespace) -> int:
    from app.bench import tui as bench_tui  # textual is imported only here

    return bench_tui.cmd_bench_tui(ctx, args)  # type: ignore[arg-type]


def _bench_kv(ctx: object, args: argparse.Namespace) -> int:
    from app.bench import kv as bench_kv

    return bench_kv.run(args, ctx.config)  # type: ignore[attr-defined]


def _bench_inference(ctx: object, args: argparse.Namespace) -> int:
    from app.bench import inference as bench_inference

    return bench_inference.run(args, ctx.config)  # type: ignore[attr-defined]
