"""`agentdeck bench tui`: what the cockpit costs.

1. The app under Textual's pilot while five synthetic token streams run at 500 tokens/s
   each (fed into the agents' live views, as the engine feeds them): event-loop lag
   p50/p99 (a probe sleeping 10 ms), redraw passes per second, process CPU.
2. The engine's aggregate tokens/s for five requests, headless and with the cockpit
   drawing their streams, interleaved and repeated (medians): the TUI must not steal the
   inference's CPU.
Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import psutil
from rich.console import Console

from agents.config import Config, parse_config
from agents.crew.live import LiveView
from agents.inference import Backend, build_backend, resolve_model_path
from agents.inference.meter import MeterSnapshot, SlotInfo
from agents.store import Store
from app.args import at_least_one
from app.bench import harness
from app.connection import Attached
from app.context import Context
from app.progress import LoadProgress
from app.render import line, print_json

HELP = "what the cockpit costs: loop lag, redraws, CPU, engine tokens/s"
STREAMS = 5
RATE = 500  # tokens/s per stream
PROBE_S = 0.010


class TuiFigures(msgspec.Struct, kw_only=True):
    seconds: float
    streams: int
    tokens_per_s_each: int
    tokens_fed: int
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float
    redraws_per_s: float
    process_cpu_percent: float  # of one core
    engine_headless_tokens_per_s: float  # medians over rounds
    engine_with_tui_tokens_per_s: float
    engine_ratio: float  # with TUI / headless
    engine_rounds: int
    model: str


class Synthetic(Attached):
    """A store in a temporary home, with live views fed by the bench and a meter."""

    def __init__(self, db_path: Path, config: Config, live: dict[str, LiveView], meter: FakeMeter) -> None:
        super().__init__(db_path, config)
        self.live = live
        self.meter = meter

    def _live(self) -> dict[str, LiveView] | None:
        return self.live

    def _meter(self) -> MeterSnapshot | None:
        return self.meter.snapshot()


class FakeMeter:
    def __init__(self, agents: list[str]) -> None:
        self.agents = agents

    def snapshot(self) -> MeterSnapshot:
        slots = [SlotInfo(index=i, agent=a, state="generating", tokens_generated=0, tokens_per_s=RATE,
                          cached_tokens=0) for i, a in enumerate(self.agents)]
        return MeterSnapshot(ts=time.time(), state="ready", device="synthetic", model="synthetic",
                             slots=slots, waiting={}, kv_used=0, kv_total=8192,
                             tokens_per_s=RATE * len(slots), gpu=None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=at_least_one, default=10, help="how long the synthetic streams run")
    p.add_argument("--tokens", type=at_least_one, default=96, help="tokens per engine request")
    harness.add_common(p, rounds=3, rounds_help="engine rounds per side, interleaved", model=True)


def run(ctx: Context, args: argparse.Namespace) -> int:
    """textual comes in with the cockpit (app.tui), imported inside the functions that draw
    it: never when the command line is built."""
    figures = asyncio.run(_bench(ctx.config, args, Console(stderr=True)))
    if args.json:
        print_json(figures)
        return 0
    line(f"cockpit under pilot, {figures.streams} streams x {figures.tokens_per_s_each} tokens/s for "
         f"{figures.seconds:g} s ({figures.tokens_fed} tokens fed):")
    line(f"  event-loop lag p50 {figures.loop_lag_p50_ms:.2f} ms, p99 {figures.loop_lag_p99_ms:.2f} ms")
    line(f"  redraw passes {figures.redraws_per_s:.1f}/s, "
         f"process CPU {figures.process_cpu_percent:.0f}% of a core")
    line(f"engine ({figures.model}), 5 requests, medians of {figures.engine_rounds} interleaved rounds:")
    line(f"  headless {figures.engine_headless_tokens_per_s:.1f} tokens/s, with the cockpit "
         f"{figures.engine_with_tui_tokens_per_s:.1f} tokens/s, ratio {figures.engine_ratio:.2f}")
    return 0


def _config(ws: Path) -> Config:
    return parse_config(f'workspace = "{ws}"\nschedules = []')


async def _bench(base: Config, args: argparse.Namespace, err: Console) -> TuiFigures:
    with tempfile.TemporaryDirectory(prefix="agentdeck-bench-tui-") as tmp:
        home = Path(tmp)
        (home / "ws").mkdir()
        config = _config(home / "ws")
        config.inference = base.inference
        agents = list(config.enabled_agents())
        Store.open(home / "agentdeck.db", agents).close()
        err.print(f"[dim]cockpit with {STREAMS} synthetic streams for {args.seconds} s…[/]")
        pilot_figures = await _synthetic(home, config, agents, float(args.seconds))
        model = resolve_model_path(args.model, base.inference.model)
        with LoadProgress(err, f"loading {model.name}") as progress:
            engine = build_backend(config.inference, model=model, progress=progress)
            await engine.start()
        try:
            rates: dict[str, list[float]] = {"headless": [], "with_tui": []}
            for round_ in range(args.rounds):
                err.print(f"[dim]engine round {round_ + 1}/{args.rounds}[/]")
                for side in harness.order(list(rates), round_):  # neither side always first
                    if side == "headless":
                        rate = await _engine_run(engine, args.tokens, None)
                    else:
                        rate = await _engine_with_tui(home, config, agents, engine, args.tokens)
                    rates[side].append(rate)
        finally:
            await engine.stop()
    h, t = harness.spread(rates["headless"]).median, harness.spread(rates["with_tui"]).median
    return TuiFigures(**pilot_figures, engine_headless_tokens_per_s=round(h, 1),
                      engine_with_tui_tokens_per_s=round(t, 1), engine_ratio=round(t / h, 3) if h else 0.0,
                      engine_rounds=args.rounds, model=model.name)


async def _synthetic(home: Path, config: Config, agents: list[str], seconds: float) -> dict:
    from app.tui import make_app

    live = {name: LiveView(agent=name) for name in agents[:STREAMS]}
    app = make_app(Synthetic(home / "agentdeck.db", config, live, FakeMeter(list(live))), home)
    ticks = 0
    original = app.deck_screen._refresh

    async def counted() -> None:
        nonlocal ticks
        await original()
        ticks += 1

    app.deck_screen._refresh = counted  # type: ignore[method-assign]
    lags: list[float] = []
    fed = 0
    async with app.run_test(size=(160, 48)) as pilot:
        await app.connection.ready.wait()
        for view in live.values():
            view.state = "acting"
            view.begin_call("step 1")
            view.feed('{"final": "')  # agents' output is JSON: grammar-constrained steps

        async def feed() -> None:
            """500 tokens/s per stream by the clock: a busy loop gets them in bigger batches,
            as it would from the engine, never fewer."""
            nonlocal fed
            started = time.monotonic()
            while True:
                due = int((time.monotonic() - started) * RATE) - fed // len(live)
                for view in live.values():
                    for _ in range(due):
                        view.feed("tok ")
                    if view.fed > 20_000:  # a new call now and then, as the agents make them
                        view.begin_call("step 2")
                        view.feed('{"final": "')
                fed += due * len(live)
                await asyncio.sleep(0.02)

        async def probe() -> None:
            while True:
                started = time.perf_counter()
                await asyncio.sleep(PROBE_S)
                lags.append(time.perf_counter() - started - PROBE_S)

        proc = psutil.Process()
        cpu0, ticks0, wall0 = proc.cpu_times(), ticks, time.monotonic()
        jobs = [asyncio.create_task(feed()), asyncio.create_task(probe())]
        await pilot.pause(seconds)
        for job in jobs:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        wall = time.monotonic() - wall0
        cpu1 = proc.cpu_times()
        redraws = ticks - ticks0
        await pilot.press("ctrl+q")
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100
    lags.sort()
    return {"seconds": seconds, "streams": len(live), "tokens_per_s_each": RATE, "tokens_fed": fed,
            "loop_lag_p50_ms": round(statistics.median(lags) * 1000, 3) if lags else 0.0,
            "loop_lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 3) if lags else 0.0,
            "redraws_per_s": round(redraws / wall, 1), "process_cpu_percent": round(cpu, 1)}


async def _engine_run(engine: Backend, tokens: int, live: dict[str, LiveView] | None) -> float:
    started = time.monotonic()
    gens = [engine.submit([{"role": "user", "content": f"Tell a long story, part {i}."}], max_tokens=tokens,
                          ignore_eos=True, agent=f"bench{i}") for i in range(STREAMS)]

    async def drain(i: int) -> int:
        view = live[list(live)[i]] if live else None
        if view is not None:
            view.begin_call("step 1")
            view.feed('{"final": "')  # as the crew's grammar-constrained output starts
        async for piece in gens[i]:
            if view is not None:
                view.feed(piece)
        return (await gens[i]).usage.completion_tokens

    counts = await asyncio.gather(*(drain(i) for i in range(STREAMS)))
    return sum(counts) / (time.monotonic() - started)


async def _engine_with_tui(home: Path, config: Config, agents: list[str], engine: Backend,
                           tokens: int) -> float:
    from app.tui import make_app

    live = {name: LiveView(agent=name, state="acting") for name in agents[:STREAMS]}
    app = make_app(Synthetic(home / "agentdeck.db", config, live, engine), home)
    async with app.run_test(size=(160, 48)) as pilot:
        await app.connection.ready.wait()
        rate = await _engine_run(engine, tokens, live)
        await pilot.press("ctrl+q")
    return rate
