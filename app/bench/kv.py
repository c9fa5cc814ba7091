"""`agentdeck bench kv`: what idle caches cost the running sequences, per KV layout.

Two engines side by side on one model, one per layout (`inference.kv_unified` true: one
pool shared by all slots; false: each slot its own cells). In each, --agents sequences
generate together, first with no idle caches, then while --idle other slots each hold a
--idle-tokens cached prompt. The figure is the median gap between tokens (one decode
step). Layouts and states are interleaved over --rounds; medians and ranges are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time

import msgspec
from rich.console import Console
from rich.table import Table

from agents.config import Config, SamplingConfig
from agents.errors import AgentdeckError
from agents.inference import Backend, build_backend, resolve_model_path
from app.args import at_least_one
from app.bench import harness
from app.context import Context
from app.progress import LoadProgress
from app.render import print_json

HELP = "what idle caches cost running sequences, per KV layout"

_GREEDY = SamplingConfig(temperature=0.0, repeat_penalty=1.0, timeout_s=900.0)
_SKIP = 4  # the first gaps of a stream include admission and prefill
_TOKENS_PER_RULE = 15  # roughly, in SmolLM2's tokenizer; the idle prompts aim near --idle-tokens


class Cell(msgspec.Struct, kw_only=True):
    layout: str  # "unified" or "split"
    idle_caches: int
    idle_tokens_each: int
    step_ms_median: float
    step_ms_min: float
    step_ms_max: float


class Report(msgspec.Struct, kw_only=True):
    model: str
    agents: int
    rounds: int
    n_ctx: int
    cells: list[Cell]
    # step time with idle caches ÷ without, per layout (medians of per-round ratios)
    slowdown: dict[str, float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    count = at_least_one
    parser.add_argument("--agents", type=count, default=5, metavar="N", help="sequences generating (5)")
    parser.add_argument("--idle", type=count, default=3, metavar="N", help="idle caches (3)")
    parser.add_argument("--idle-tokens", type=count, default=3000, metavar="N",
                        help="tokens each idle cache holds (3000)")
    parser.add_argument("--tokens", type=count, default=48, metavar="N", help="tokens per sequence (48)")
    harness.add_common(parser, rounds=3, model=True)


def run(ctx: Context, args: argparse.Namespace) -> int:
    """Errors and Ctrl-C go to the CLI's boundary: one line, the error's exit code."""
    report = asyncio.run(_bench(args, ctx.config, Console(stderr=True)))
    if args.json:
        print_json(report)
    else:
        _print(report, Console())
    return 0


def _idle_prompt(agent: str, tokens: int) -> list[dict[str, str]]:
    n = max(1, tokens // _TOKENS_PER_RULE)
    rules = " ".join(f"Rule {i}: {agent} keeps note {i} about the build." for i in range(n))
    return [{"role": "system", "content": f"You are {agent}. {rules}"}, {"role": "user", "content": "ok?"}]


async def _step_ms(engine: Backend, agents: int, tokens: int, tag: str) -> float:
    async def one(i: int) -> list[float]:
        gen = engine.submit(
            [{"role": "user", "content": f"Write a long story, number {i} ({tag})."}],
            agent=f"runner{i}",
            max_tokens=tokens,
            ignore_eos=True,
        )
        stamps = [time.perf_counter() async for _ in gen]
        result = await gen
        if result.finish_reason != "length":
            raise AgentdeckError(f"a request ended early: {result.finish_reason} {result.error or ''}")
        return [b - a for a, b in itertools.pairwise(stamps)][_SKIP:]

    gaps = await asyncio.gather(*(one(i) for i in range(agents)))
    return statistics.median(g for each in gaps for g in each) * 1000


async def _set_idle(engine: Backend, n: int, tokens: int, big: bool) -> int:
    """Leave n idle slots holding a long prompt (big) or next to nothing."""
    held = 0
    for i in range(n):
        messages = _idle_prompt(f"idle{i}", tokens) if big else [{"role": "user", "content": "hi"}]
        r = await engine.submit(messages, agent=f"idle{i}", max_tokens=1)
        if r.finish_reason == "error":
            raise AgentdeckError(f"could not fill an idle cache: {r.error}")
        held = r.usage.prompt_tokens
    return held


async def _bench(args: argparse.Namespace, config: Config, err: Console) -> Report:
    path = resolve_model_path(args.model, config.inference.model)
    slots = args.agents + args.idle
    per_slot = -(-(args.idle_tokens + 256) // 256) * 256  # whole pages, room for the prompt
    n_ctx = slots * per_slot
    engines: dict[str, Backend] = {}
    try:
        for layout in ("unified", "split"):
            inf = msgspec.structs.replace(
                config.inference,
                n_ctx=n_ctx,
                slots=slots,
                kv_unified=layout == "unified",
                idle_cache_tokens=per_slot,
            )
            with LoadProgress(err, f"loading {path.name} ({layout} KV)") as progress:
                engines[layout] = build_backend(inf, model=path, sampling=_GREEDY, progress=progress)
                await engines[layout].start()
        figures: dict[tuple[str, bool], list[float]] = {}
        held: dict[str, int] = {}
        for r in range(args.rounds):
            for layout, engine in harness.order(list(engines.items()), r):
                for big in (False, True):
                    n = await _set_idle(engine, args.idle, args.idle_tokens, big)
                    if big:
                        held[layout] = n
                    ms = await _step_ms(engine, args.agents, args.tokens, f"{r}{big}")
                    figures.setdefault((layout, big), []).append(ms)
    finally:
        for engine in engines.values():
            await engine.stop()
    cells = []
    for (layout, big), v in figures.items():
        step = harness.spread(v)
        cells.append(Cell(
            layout=layout,
            idle_caches=args.idle if big else 0,
            idle_tokens_each=held[layout] if big else 0,
            step_ms_median=round(step.median, 2),
            step_ms_min=round(step.low, 2),
            step_ms_max=round(step.high, 2),
        ))
    slowdown = {
        layout: round(
            harness.spread(
                a / b for a, b in zip(figures[layout, True], figures[layout, False], strict=True)
            ).median,
            3,
        )
        for layout in engines
    }
    return Report(model=path.name, agents=args.agents, rounds=args.rounds, n_ctx=n_ctx, cells=cells,
                  slowdown=slowdown)


def _print(r: Report, console: Console) -> None:
    console.print(
        f"[bold]KV layout benchmark[/] · {r.model} · {r.agents} sequences generating · "
        f"n_ctx {r.n_ctx} · {r.rounds} rounds, interleaved"
    )
    table = Table(caption="step: median gap between tokens (one decode step); range over rounds")
    for col in ("layout", "idle caches", "step (median)", "range"):
        table.add_column(col, justify="left" if col == "layout" else "right")
    for c in r.cells:
        idle = f"{c.idle_caches} × {c.idle_tokens_each}" if c.idle_caches else "none"
        spread = f"{c.step_ms_min:.1f}–{c.step_ms_max:.1f}"
        table.add_row(c.layout, idle, f"{c.step_ms_median:.1f} ms", spread)
    console.print(table)
    for layout, ratio in r.slowdown.items():
        console.print(f"{layout}: idle caches make a step [bold]{ratio:.2f}×[/] as long")
