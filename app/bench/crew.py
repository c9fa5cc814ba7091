"""`agentdeck bench crew`: how well the crew keeps the engine busy, with the real model.

Five tasks for five agents run through the whole crew (host, gate, tools, reflections)
in a temporary home; then, in the same run and on the same engine, the engine alone gets
five synthetic requests of the same sizes (each agent's prompt and generated tokens).
Printed: aggregate generated tokens/s of both and their ratio, mean slot occupancy,
per-phase latency (triage, step, reflect) and orchestration overhead (time per step
outside model and tool calls). Figures, never assertions. --backend NAME: every agent,
and the engine-alone comparison, on that configured backend (default: the config's default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import msgspec
from rich.console import Console

from agents.config import Config, parse_config
from agents.config.load import EMBEDDED_BACKEND
from agents.crew.harness import ABLATIONS, GROUNDING
from agents.errors import ConfigError, InvalidArgument
from agents.inference import Backend, build_backends, resolve_model_path
from agents.protocol import OWNER
from agents.runtime import Host
from agents.store import queries
from agents.store import reducers as r
from app.bench import harness
from app.context import Context
from app.progress import LoadProgress
from app.render import line, print_json

HELP = "how well the crew keeps the engine busy (real model)"
DEADLINE_S = 240.0

TASKS = {
    "lead": "Plan how to write a short README for this workspace.",
    "dev": "List the files in the workspace and say which one is largest.",
    "review": "Look at the workspace and say whether anything looks wrong.",
    "ops": "Report disk usage of this machine.",
    "scribe": "What happened today? Answer from memory and messages.",
}


class CrewFigures(msgspec.Struct, kw_only=True):
    backend: str  # the configured backend every agent thought with
    model: str
    device: str
    tasks: int  # the five, plus any subtasks the agents delegated
    tasks_done: int
    tasks_failed: int
    tasks_deferred: int  # triage said later (not yet picked up again)
    tasks_unfinished: int  # still queued, active or blocked at the deadline
    wall_s: float
    crew_tokens_per_s: float  # generated tokens over the crew's wall time
    engine_tokens_per_s: float  # the same sizes, engine alone
    ratio: float  # crew / engine alone
    mean_generating_slots: float  # sampled every 0.1 s while the crew ran
    phase_latency_s: dict[str, float]  # median per phase: triage, step, reflect
    overhead_per_step_s: float  # time per step outside model and tool calls
    model_calls: int
    steps: int


def ablation_choice(value: str) -> list[str]:
    """--ablate's value as the variants it names, or a one-line error naming the unknown."""
    if value == "all":
        return list(ABLATIONS)
    if value == "grounding":
        return list(GROUNDING)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown lever {', '.join(unknown) or repr(value)}; "
                                         f"choose all, grounding or from: {', '.join(ABLATIONS)}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", action="store_true", help="the effectiveness suite: workstation "
                   "tasks for all five agents, each with a checker; prints per task done / verified "
                   "correct and the shares")
    p.add_argument("--ablate", nargs="?", const="all", default=None, type=ablation_choice,
                   metavar="LEVERS", help="with --suite: also run it with each lever of the harness off in "
                   "turn: all of them (no value), 'grounding' (the grounding levers and all of them off "
                   "at once), or a comma-separated list of: " + ", ".join(ABLATIONS))
    p.add_argument("--tasks", default=None, metavar="PATTERN", help="with --suite: only the tasks whose "
                   "agent/name matches this regular expression (e.g. 'ops/' or 'edit')")
    p.add_argument("--keep", default=None, type=Path, metavar="DIR", help="with --suite: keep each task's "
                   "home and workspace under DIR (a new directory) to see what the agents did: "
                   "`agentdeck --home DIR/R-HARNESS-I/home log`")
    p.add_argument("--where-acted", action="store_true", help="with --ablate: the default first in each "
                   "round, then each lever off only in the tasks where that lever acted; elsewhere the "
                   "default's result is carried over, as a lever that did not act changed nothing")
    p.add_argument("--journal", default=None, type=Path, metavar="FILE", help="with --suite: keep each "
                   "task run in FILE as it finishes; run again with the same FILE to resume a stopped run "
                   "(only the runs it lacks are made; more --rounds or levers may be added). Refused if the "
                   "code, model file or engine settings differ from those that wrote it")
    harness.add_common(p, rounds=1, rounds_help="with --suite: repeat N times", model=True, backend=True)


SUITE_ONLY = {"ablate": "--ablate", "tasks": "--tasks", "keep": "--keep", "where_acted": "--where-acted",
              "journal": "--journal"}


def run(ctx: Context, args: argparse.Namespace) -> int:
    chosen = harness.choose_backend(ctx.config, args.backend)
    given = [flag for attr, flag in SUITE_ONLY.items() if getattr(args, attr) not in (None, False)]
    if given and not args.suite:
        raise InvalidArgument(f"{', '.join(given)} only with --suite")
    if args.suite:
        if args.backend is not None and chosen.name != EMBEDDED_BACKEND:  # the suite builds its own engine
            raise ConfigError(f"--suite runs on the embedded engine; --backend {chosen.name} works "
                              "without --suite")
        return _suite(ctx, args)
    figures = asyncio.run(_bench(ctx.config, args.model, Console(stderr=True), chosen))
    if args.json:
        print_json(figures)
        return 0
    line(f"crew: {figures.tasks} tasks (subtasks included): {figures.tasks_done} done, "
         f"{figures.tasks_failed} failed, {figures.tasks_deferred} deferred in {figures.wall_s:.1f} s "
         f"({figures.backend}: {figures.model}, {figures.device}); {figures.model_calls} model calls, "
         f"{figures.steps} steps")
    line(f"  generated tokens/s: crew {figures.crew_tokens_per_s:.1f}, engine alone "
         f"{figures.engine_tokens_per_s:.1f}, ratio {figures.ratio:.2f}")
    line(f"  mean generating slots: {figures.mean_generating_slots:.2f}")
    line("  median phase latency: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.phase_latency_s.items()))
    line(f"  orchestration overhead: {figures.overhead_per_step_s * 1000:.1f} ms per step")
    return 0


async def _bench(base: Config, model_arg: str | None, err: Console, chosen: harness.Chosen) -> CrewFigures:
    # --model is the embedded backend's; another backend's model is its own.
    model = resolve_model_path(model_arg, base.inference.model) if chosen.name == EMBEDDED_BACKEND else None
    with tempfile.TemporaryDirectory(prefix="agentdeck-bench-crew-") as tmp:
        home, ws = Path(tmp) / "home", Path(tmp) / "ws"
        home.mkdir()
        ws.mkdir()
        for i in range(3):
            (ws / f"notes{i}.txt").write_text("x" * (100 * (i + 1)))
        config = parse_config(f'workspace = "{ws}"\nschedules = []\n')
        config.inference = base.inference
        config.backends = base.backends
        config.default_backend = chosen.name  # the fresh config's agents have no model of their own
        with LoadProgress(err, f"loading {model.name if model else chosen.name}") as progress:
            engine = build_backends(config, model=model, progress=progress)
            async with Host(home / "agentdeck.db", config, backend=engine, crew=True) as host:
                for agent, text in TASKS.items():
                    await host.store.write(r.create_task, OWNER, text, owner=agent)
                started = time.monotonic()
                occupancy = await _run_until_idle(host, engine)
                wall = time.monotonic() - started
                crew = await _crew_figures(host, wall)
                alone = await _engine_alone(engine, crew["sizes"])
                snapshot = engine.snapshot()
    return CrewFigures(
        backend=chosen.name, model=model.name if model else snapshot.model or chosen.settings.model,
        device=snapshot.device, tasks=crew["tasks"], tasks_done=crew["done"],
        tasks_failed=crew["failed"], tasks_deferred=crew["deferred"], tasks_unfinished=crew["unfinished"],
        wall_s=round(wall, 2), crew_tokens_per_s=round(crew["tokens"] / wall, 1),
        engine_tokens_per_s=round(alone, 1), ratio=round(crew["tokens"] / wall / alone, 3) if alone else 0.0,
        mean_generating_slots=round(statistics.mean(occupancy) if occupancy else 0.0, 2),
        phase_latency_s=crew["phases"], overhead_per_step_s=round(crew["overhead"], 4),
        model_calls=crew["calls"], steps=crew["steps"],
    )


async def _run_until_idle(host: Host, engine: Backend, deadline_s: float = DEADLINE_S) -> list[int]:
    """Until the crew is idle, or the deadline (then the figures say what is unfinished);
    returns the number of generating slots, sampled every 0.1 s meanwhile."""
    assert host.crew is not None
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(sum(1 for s in engine.snapshot().slots if s.state == "generating"))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    try:
        await host.crew.wait_idle(deadline_s)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return samples


async def _crew_figures(host: Host, wall: float) -> dict:
    tasks = await host.store.read(queries.tasks)
    usage = await host.store.read(lambda c: c.execute(
        "SELECT agent, prompt_tokens, completion_tokens, queue_s, decode_s FROM inference_usage").fetchall())
    events = await host.store.read(queries.events_after, 0, 100_000)
    # Per-phase latency from the event log: each phase event after the previous one of its task.
    last: dict[str, float] = {}
    phases: dict[str, list[float]] = defaultdict(list)
    steps = 0
    for e in events:
        if e.kind == "task.status" and getattr(e.payload, "new", None) == "active":
            last[e.subject] = e.ts
        elif e.kind in ("agent.triage", "agent.step", "agent.reflect") and e.subject in last:
            phases[e.kind.removeprefix("agent.")].append(e.ts - last[e.subject])
            last[e.subject] = e.ts
            steps += e.kind == "agent.step"
    # Overhead: the time tasks were worked (not queued or blocked) outside model and tool
    # calls, as each agent's runner measured it, per step.
    assert host.crew is not None
    views = [host.crew.live(name) for name in host.crew.agents]
    outside = sum(v.work_s - v.model_s - v.tool_s for v in views)
    worked_steps = sum(v.steps for v in views)
    per_agent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for agent, prompt, completion, _, _ in usage:
        per_agent[agent][0] = max(per_agent[agent][0], prompt)
        per_agent[agent][1] += completion
    return {
        "tasks": len(tasks), "done": sum(t.status == "done" for t in tasks),
        "failed": sum(t.status == "failed" for t in tasks),
        "deferred": sum(t.status == "deferred" for t in tasks),
        "unfinished": sum(t.status in ("queued", "active", "blocked") for t in tasks),
        "tokens": sum(row[2] for row in usage), "calls": len(usage), "steps": steps,
        "phases": {k: round(statistics.median(v), 3) for k, v in sorted(phases.items())},
        "overhead": max(outside, 0.0) / worked_steps if worked_steps else 0.0,
        "sizes": [tuple(v) for v in per_agent.values()],
    }


async def _engine_alone(engine: Backend, sizes: list[tuple[int, int]]) -> float:
    """The same sizes, straight to the engine at once: each agent's longest prompt and all
    its generated tokens as one request."""
    if not sizes:
        return 0.0
    started = time.monotonic()
    gens = [engine.submit([{"role": "user", "content": "word " * max(prompt - 20, 1)}],
                          max_tokens=max(completion, 1), ignore_eos=True, agent=f"synthetic{i}")
            for i, (prompt, completion) in enumerate(sizes)]
    results = await asyncio.gather(*(g.result() for g in gens))
    return sum(res.usage.completion_tokens for res in results) / (time.monotonic() - started)


def _suite(ctx: Context, args: argparse.Namespace) -> int:
    from app.bench.suite import print_suite, run_suite

    if args.where_acted and not args.ablate:
        raise InvalidArgument("--where-acted needs --ablate: it reruns ablations where their levers acted")
    if args.keep is not None:
        try:  # resuming a journal keeps adding to the same directory
            args.keep.mkdir(parents=True, exist_ok=args.journal is not None)
        except OSError as err:
            raise InvalidArgument(f"--keep {args.keep}: {err.strerror} (give a new directory)") from None
    every = asyncio.run(run_suite(ctx.config, args.model, Console(stderr=True), ablate=args.ablate or [],
                                  rounds=args.rounds, pattern=args.tasks, keep=args.keep,
                                  where_acted=args.where_acted, journal=args.journal))
    if args.json:
        print_json(every)
        return 0
    print_suite(every)
    return 0
