"""`agentdeck bench inference`: the engine against the naive path and a low-level reference.

On one model, with the same prompts, greedy sampling and end-of-generation suppressed (so
every request makes exactly --tokens tokens), three throughput sides:
1. naive: N requests one after another through llama-cpp-python's high-level `Llama`;
2. reference: the same N through llama.cpp's low-level batch API with no scheduling — the
   limit the engine can approach through these bindings;
3. engine: the same N submitted at once to the batching engine.
The sides run interleaved, --rounds times, in an order rotated each round (a shared machine
drifts; one run of each, one after the other, swung the speedup from 1.27x to 14.6x).
Each round also runs engine-only scenarios: TTFT of a priority-10 request under load, the
inter-token stall a long prefill causes, 4 long prompts at once, two agents with long system
prompts taking turns, and the prefix cache. Every figure is the median and range over rounds;
ratios are taken per round. Figures, not assertions: a table, or one JSON object with --json.

--backend NAME runs it on a configured backend instead of the default: an embedded one as
above (on its own model); an OpenAI-compatible server gets the engine side (as "engine")
and the scenarios, without the naive and reference sides (they load the model in this
process). --vs-server runs the embedded engine against llama-cpp-python's server on the
same model instead (app/bench/server_side_by_side.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from agents.config import Config
from agents.errors import AgentdeckError, ConfigError, ModelError
from agents.inference import Backend, build_backend, build_backends, resolve_model_path
from app.args import at_least_one
from app.bench import harness
from app.bench import inference_scenarios as sc
from app.bench.harness import Stat, say, stat
from app.context import Context
from app.progress import LoadProgress
from app.render import print_json

HELP = "continuous batching vs one-at-a-time"
SIDES = ("naive", "reference", "engine")
_MAX_CTX = 1 << 17  # KV cells; beyond this the figures asked for would not fit in memory



class Side(msgspec.Struct, kw_only=True):
    tokens: list[int]  # generated per round, all requests together
    seconds: Stat  # first request asked for -> last token
    tokens_per_s: Stat
    ttft_s: Stat  # mean time to first token, from when all N were asked for at once
    ttft_own_s: Stat  # mean, from when each request started being served
    itl_p50_ms: Stat  # inter-token latency
    itl_p99_ms: Stat


class UnderLoad(msgspec.Struct, kw_only=True):
    generations: int  # long generations running when the priority-10 request arrives
    ttft_s: Stat
    queue_wait_s: Stat  # of that TTFT, time waiting for a slot


class PrefillStall(msgspec.Struct, kw_only=True):
    running: int  # sequences generating while the long prompt is prefilled beside them
    prompt_tokens: int
    long_ttft_s: Stat
    itl_before_p50_ms: Stat  # their gaps before the long prompt arrived
    itl_p50_ms: Stat  # their gaps while it was prefilled
    itl_p99_ms: Stat
    itl_max_ms: Stat


class FairPrefill(msgspec.Struct, kw_only=True):
    prompts: int
    prompt_tokens: int
    ttft_first_s: Stat  # the first of them to get a token
    ttft_median_s: Stat
    ttft_last_s: Stat


class TurnFigure(msgspec.Struct, kw_only=True):
    turn: int
    agent: str
    prompt_tokens: int
    cached_prompt_tokens: Stat
    ttft_s: Stat


class Turns(msgspec.Struct, kw_only=True):
    first_prompt_tokens: int  # an agent's first turn: its system prompt and one question
    turns: list[TurnFigure]
    ttft_first_s: Stat  # each round's median over each agent's first turn (cold)
    ttft_later_s: Stat  # each round's median over the later turns
    cached_later_min: Stat  # each round's fewest cached prompt tokens in a later turn


class PrefixCache(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    cached_prompt_tokens: int
    ttft_cold_s: Stat
    ttft_cached_s: Stat
    speedup: Stat


class Report(msgspec.Struct, kw_only=True):
    backend: str  # the configured backend it ran on
    model: str
    device: str
    threads: int
    slots: int
    n_ctx: int
    kv_layout: str  # "unified": one pool for all slots; "per-slot": n_ctx / slots each
    agents: int
    tokens_per_request: int
    rounds: int
    long_prompt: int
    engine_load_s: float
    orders: list[list[str]]  # the order the sides ran in, each round
    # None on a server backend: those sides load the model in this process.
    naive: Side | None
    reference: Side | None
    engine: Side  # the backend it ran on, all requests at once
    engine_over_naive: Stat | None  # tokens/s ratios, per round
    engine_over_reference: Stat | None
    ttft_under_load: UnderLoad
    prefill_stall: PrefillStall
    fair_prefill: FairPrefill
    turn_taking: Turns
    prefix_cache: PrefixCache


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=at_least_one, default=5, metavar="N",
                        help="concurrent requests (default 5)")
    parser.add_argument("--tokens", type=at_least_one, default=128, metavar="N",
                        help="tokens generated per request (default 128)")
    parser.add_argument("--long-prompt", type=at_least_one, default=1800, metavar="N",
                        help="tokens of the long prompt prefilled beside running sequences (default 1800; "
                        "the 4 fair-share prompts and the turn-taking system prompts scale with it)")
    parser.add_argument("--vs-server", action="store_true",
                        help="instead: the embedded engine against llama-cpp-python's OpenAI-compatible "
                        "server (python -m llama_cpp.server) on the same model, side by side: tokens/s, "
                        "TTFT and per-agent prefix reuse")
    harness.add_common(parser, rounds=3, rounds_help="rounds of every side, interleaved; medians and ranges",
                       model=True, backend=True)


def run(ctx: Context, args: argparse.Namespace) -> int:
    """Errors and Ctrl-C go to the CLI's boundary: one line, the error's exit code."""
    chosen = harness.choose_backend(ctx.config, args.backend)
    err = Console(stderr=True)
    if args.vs_server:
        from app.bench import server_side_by_side as vs

        if not chosen.embedded:
            raise ConfigError(f"--vs-server compares the embedded engine with a server on its model; "
                              f"backend {chosen.name} is a server")
        versus = asyncio.run(vs.run_versus(args, ctx.config, _model(ctx, args, chosen), err))
        if args.json:
            print_json(versus)
        else:
            vs.print_versus(versus, Console())
        return 0
    if chosen.embedded:
        report = asyncio.run(_bench(args, ctx.config, err, chosen.name, _model(ctx, args, chosen)))
    else:
        report = asyncio.run(_bench_server(args, ctx.config, err, chosen))
    if args.json:
        print_json(report)
    else:
        _print_table(report, Console())
    return 0


def _model(ctx: Context, args: argparse.Namespace, chosen: harness.Chosen) -> Path:
    """The GGUF an embedded backend runs: --model, else the backend's own model, else
    [inference]'s (the bench command has resolved --model, to the default when not given)."""
    if chosen.settings.model and not getattr(args, "model_given", True):
        return resolve_model_path(chosen.settings.model, ctx.config.inference.model, home=ctx.home)
    return resolve_model_path(Path(args.model) if args.model else None, ctx.config.inference.model,
                              home=ctx.home)


# --- running the rounds ----------------------------------------------------------------------


def _context(base: int, n: int, slots: int, tokens: int, long: int) -> int:
    """KV cells for the largest scenario, so none of them runs short and pauses a sequence:
    in one pool shared by the slots, or in each slot's n_ctx / slots (the layout is config)."""
    fair, turn = round(long * sc.FAIR_SCALE) + 64, round(long * sc.TURN_SCALE) + sc.TURNS * 48 + 64
    running = max(4 * tokens, 256) + 64  # a sequence generating beside the long prompt
    pool = max(
        n * (4 * tokens + 160),  # the long generations under load, and the throughput sides
        (slots - 1) * running + long + 64,  # the prefill stall
        4 * fair,
        2 * turn,
        round(long * sc.CACHE_SCALE) + 128,  # the prefix cache
    )
    one = max(fair, turn, long + 64, running, 4 * tokens + 160)  # the longest single sequence
    need = max(pool, slots * one) + 256
    return max(base, -(-need // 256) * 256)


async def _bench(args: argparse.Namespace, config: Config, err: Console, name: str, path: Path) -> Report:
    inf = config.inference
    n, tokens, rounds, long = args.agents, args.tokens, args.rounds, args.long_prompt
    threads = inf.threads or os.cpu_count() or 1
    slots = max(inf.slots, n, 4)  # 4: the fair-prefill scenario's prompts all get a slot
    n_ctx = _context(inf.n_ctx, n, slots, tokens, long)
    if n_ctx > _MAX_CTX:
        raise AgentdeckError(
            f"--agents {n} --tokens {tokens} --long-prompt {long} need {n_ctx} KV cells; "
            f"at most {_MAX_CTX}: ask for less"
        )
    inf = msgspec.structs.replace(inf, slots=slots, n_ctx=n_ctx, threads=threads)

    with LoadProgress(err, f"loading {path.name}") as progress:
        engine = build_backend(inf, model=path, sampling=sc.greedy(), progress=progress)
        await engine.start()
    naive: sc.Naive | None = None
    reference: sc.Reference | None = None
    try:
        with LoadProgress(err, "loading the naive and reference sides"):
            try:
                naive = await asyncio.to_thread(sc.Naive, path, inf)
            except ValueError as e:  # the high-level Llama says "Failed to create llama_context"
                raise ModelError(f"naive side: {e}") from None
            reference = await asyncio.to_thread(sc.Reference, path, inf, n)
        await engine.submit([{"role": "user", "content": "warm up"}], max_tokens=4, agent="warmup")
        runs: dict[str, list[sc.SideRun]] = {s: [] for s in SIDES}
        orders: list[list[str]] = []
        scen: dict[str, list] = {k: [] for k in ("load", "stall", "fair", "turns", "cache")}
        for r in range(rounds):
            order = harness.order(SIDES, r)
            orders.append(order)
            batch = sc.prompts(n, f"Round {r + 1}.")
            for name in order:
                say(err, f"round {r + 1}/{rounds}: {name}")
                if name == "naive":
                    runs[name].append(await asyncio.to_thread(naive.round, batch, tokens))
                elif name == "reference":
                    runs[name].append(await asyncio.to_thread(reference.round, batch, tokens))
                else:
                    runs[name].append(await sc.engine_side(engine, batch, tokens))
            say(err, f"round {r + 1}/{rounds}: scenarios")
            await _scenarios(engine, scen, r, n, min(n, slots - 1), tokens, long, exact=True)
        device = engine.snapshot().device
        # Freed only here: after an error or Ctrl-C a worker thread may still be inside one
        # (to_thread cannot stop it), and the process is about to end anyway.
        naive.close()
        reference.close()
    finally:
        await engine.stop()
    sides = {side: _side(rs) for side, rs in runs.items()}
    tps = {side: s.tokens_per_s.rounds for side, s in sides.items()}
    return Report(
        backend=name,
        model=path.name,
        device=device,
        threads=threads,
        slots=slots,
        n_ctx=n_ctx,
        # Engines before the layout became a config switch always used one pool.
        kv_layout="unified" if getattr(inf, "kv_unified", True) else "per-slot",
        agents=n,
        tokens_per_request=tokens,
        rounds=rounds,
        long_prompt=long,
        engine_load_s=round(engine.load_time_s or 0.0, 3),
        orders=orders,
        naive=sides["naive"],
        reference=sides["reference"],
        engine=sides["engine"],
        engine_over_naive=_ratios(tps["engine"], tps["naive"]),
        engine_over_reference=_ratios(tps["engine"], tps["reference"]),
        **_scenario_figures(scen, n),
    )


async def _bench_server(args: argparse.Namespace, config: Config, err: Console,
                        chosen: harness.Chosen) -> Report:
    """The engine side and the scenarios on an OpenAI-compatible server: the server's
    context, threads and slots are its own; `max_concurrent` stands for slots."""
    n, tokens, rounds, long = args.agents, args.tokens, args.rounds, args.long_prompt
    backend = build_backends(harness.only_on(config, chosen), sampling=sc.greedy())
    say(err, f"connecting to backend {chosen.name}")
    await backend.start()
    runs: list[sc.SideRun] = []
    scen: dict[str, list] = {k: [] for k in ("load", "stall", "fair", "turns", "cache")}
    try:
        warm = await backend.submit([{"role": "user", "content": "warm up"}], max_tokens=4, agent="warmup")
        if warm.finish_reason not in ("stop", "length"):
            raise AgentdeckError(f"backend {chosen.name}: {warm.error or warm.finish_reason}")
        for r in range(rounds):
            say(err, f"round {r + 1}/{rounds}: {chosen.name}")
            runs.append(await sc.engine_side(backend, sc.prompts(n, f"Round {r + 1}."), tokens, exact=False))
            say(err, f"round {r + 1}/{rounds}: scenarios")
            running = max(1, min(n, chosen.settings.max_concurrent - 1))
            await _scenarios(backend, scen, r, n, running, tokens, long, exact=False)
        snap = backend.snapshot()
    finally:
        await backend.stop()
    return Report(
        backend=chosen.name, model=snap.model or chosen.settings.model, device=snap.device, threads=0,
        slots=chosen.settings.max_concurrent, n_ctx=0, kv_layout="server", agents=n,
        tokens_per_request=tokens, rounds=rounds, long_prompt=long,
        engine_load_s=round(backend.load_time_s or 0.0, 3),
        orders=[["engine"] for _ in range(rounds)], naive=None, reference=None, engine=_side(runs),
        engine_over_naive=None, engine_over_reference=None, **_scenario_figures(scen, n),
    )


async def _scenarios(engine: Backend, scen: dict[str, list], r: int, n: int, running: int, tokens: int,
                     long: int, *, exact: bool) -> None:
    """One round of the scenarios beyond throughput; each appends its figures to `scen`."""
    tag = f"Load {r + 1}."
    scen["load"].append(await sc.ttft_under_load(engine, n, tokens, tag, exact=exact))
    scen["stall"].append(await sc.prefill_stall(engine, running, tokens, long, tag, exact=exact))
    scen["fair"].append(await sc.fair_prefill(engine, long, exact=exact))
    scen["turns"].append(await sc.turns(engine, long, tokens, exact=exact))
    scen["cache"].append(await sc.prefix_cache(engine, long, exact=exact))


def _scenario_figures(scen: dict[str, list], n: int) -> dict[str, object]:
    """The scenarios' Report fields."""
    return dict(
        ttft_under_load=UnderLoad(
            generations=n,
            ttft_s=stat([t for t, _ in scen["load"]], 3),
            queue_wait_s=stat([w for _, w in scen["load"]], 3),
        ),
        prefill_stall=_stall(scen["stall"]),
        fair_prefill=FairPrefill(
            prompts=4,
            prompt_tokens=scen["fair"][-1][0],
            ttft_first_s=stat([t[0] for _, t in scen["fair"]], 3),
            ttft_median_s=stat([statistics.median(t) for _, t in scen["fair"]], 3),
            ttft_last_s=stat([t[-1] for _, t in scen["fair"]], 3),
        ),
        turn_taking=_turns(scen["turns"]),
        prefix_cache=_cache(scen["cache"]),
    )



# --- figures over rounds -----------------------------------------------------------------------



def _ratios(top: list[float], bottom: list[float]) -> Stat:
    return stat([t / b if b else 0.0 for t, b in zip(top, bottom, strict=True)], 3)


def _side(runs: list[sc.SideRun]) -> Side:
    return Side(
        tokens=[r.tokens for r in runs],
        seconds=stat([r.seconds for r in runs], 3),
        tokens_per_s=stat([r.tokens / r.seconds for r in runs], 1),
        ttft_s=stat([statistics.mean(r.ttft) for r in runs], 3),
        ttft_own_s=stat([statistics.mean(r.ttft_own) for r in runs], 3),
        itl_p50_ms=stat([sc.percentile(r.itl, 50) * 1000 for r in runs], 2),
        itl_p99_ms=stat([sc.percentile(r.itl, 99) * 1000 for r in runs], 2),
    )


def _stall(stalls: list[sc.Stall]) -> PrefillStall:
    def ms(pick: Callable[[sc.Stall], list[float]], q: float) -> Stat:
        return stat([sc.percentile(pick(s), q) * 1000 for s in stalls], 2)

    return PrefillStall(
        running=stalls[-1].running,
        prompt_tokens=stalls[-1].prompt_tokens,
        long_ttft_s=stat([s.ttft for s in stalls], 3),
        itl_before_p50_ms=ms(lambda s: s.before, 50),
        itl_p50_ms=ms(lambda s: s.during, 50),
        itl_p99_ms=ms(lambda s: s.during, 99),
        itl_max_ms=ms(lambda s: s.during, 100),
    )


def _turns(rounds: list[list[sc.Turn]]) -> Turns:
    first = len({t.agent for t in rounds[0]})  # each agent's first turn is cold
    return Turns(
        first_prompt_tokens=rounds[-1][0].prompt_tokens,
        turns=[
            TurnFigure(
                turn=k + 1,
                agent=rounds[-1][k].agent,
                prompt_tokens=rounds[-1][k].prompt_tokens,
                cached_prompt_tokens=stat([rs[k].cached_prompt_tokens for rs in rounds], 0),
                ttft_s=stat([rs[k].ttft for rs in rounds], 3),
            )
            for k in range(len(rounds[0]))
        ],
        ttft_first_s=stat([statistics.median(t.ttft for t in rs[:first]) for rs in rounds], 3),
        ttft_later_s=stat([statistics.median(t.ttft for t in rs[first:]) for rs in rounds], 3),
        cached_later_min=stat([min(t.cached_prompt_tokens for t in rs[first:]) for rs in rounds], 0),
    )


def _cache(pairs: list[tuple]) -> PrefixCache:
    cold = [c.ttft_s or 0.0 for c, _ in pairs]
    hot = [h.ttft_s or 0.0 for _, h in pairs]
    return PrefixCache(
        prompt_tokens=pairs[-1][1].prompt_tokens,
        cached_prompt_tokens=pairs[-1][1].cached_prompt_tokens,
        ttft_cold_s=stat(cold, 4),
        ttft_cached_s=stat(hot, 4),
        speedup=stat([c / h if h > 0 else 0.0 for c, h in zip(cold, hot, strict=True)], 2),
    )


# --- presentation ------------------------------------------------------------------------------


def _med(s: Stat, scale: float = 1.0, digits: int = 1) -> str:
    return f"{s.median * scale:.{digits}f}"


def _rng(s: Stat, scale: float = 1.0, digits: int = 1) -> str:
    return f"[dim]{s.min * scale:.{digits}f}–{s.max * scale:.{digits}f}[/]"


def _engine_label(r: Report) -> str:
    return "engine" if r.kv_layout != "server" else f"backend {r.backend}"


def _print_table(r: Report, console: Console) -> None:
    where = (f"{r.threads} threads · {r.slots} slots · {r.n_ctx} KV cells ({r.kv_layout})"
             if r.kv_layout != "server" else f"{r.slots} requests at most in flight")
    console.print(
        f"[bold]inference benchmark[/] · backend {r.backend} · {r.model} · {r.device} · {where} · "
        f"{r.agents} requests × {r.tokens_per_request} tokens · {r.rounds} rounds, interleaved · "
        f"model load {r.engine_load_s:.2f} s"
    )
    # Each side: a row of medians over rounds, then a dim row of their ranges (min–max).
    eog = "suppressed" if r.kv_layout != "server" else "not suppressed (a server cannot be asked to)"
    table = Table(caption=f"greedy, end-of-generation {eog} · TTFT: mean, from when all were asked")
    for col in ("path", "tokens/s", "TTFT ms", "ITL p50 ms", "ITL p99 ms"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, side in (("naive", r.naive), ("reference", r.reference), (_engine_label(r), r.engine)):
        if side is None:
            continue
        picks = ((side.tokens_per_s, 1, 1), (side.ttft_s, 1000, 0), (side.itl_p50_ms, 1, 1),
                 (side.itl_p99_ms, 1, 1))
        table.add_row(name, *(_med(s, k, d) for s, k, d in picks))
        table.add_row("[dim]  min–max[/]", *(_rng(s, k, d) for s, k, d in picks))
    console.print(table)
    if r.naive is not None:
        console.print("naive: high-level Llama, one request after another · reference: low-level batch API, "
                      "no scheduling · engine: all submitted at once")
    ratios = (("engine ÷ naive", r.engine_over_naive), ("engine ÷ reference", r.engine_over_reference))
    for label, s in ratios:
        if s is None:
            continue
        console.print(f"{label}: [bold]{_med(s, 1, 2)}×[/] ({_rng(s, 1, 2)})")

    u, st, fp, t, pc = r.ttft_under_load, r.prefill_stall, r.fair_prefill, r.turn_taking, r.prefix_cache
    more = Table(caption="median and min–max over rounds")
    for col in ("scenario", "median", "min–max"):
        more.add_column(col, justify="left" if col == "scenario" else "right")
    ms, s1 = (1000.0, 0, " ms"), (1.0, 0, " ms")

    def row(label: str, s: Stat, how: tuple[float, int, str] = ms) -> None:
        scale, digits, unit = how
        more.add_row(label, _med(s, scale, digits) + unit, _rng(s, scale, digits))

    row(f"TTFT, priority-10 request beside {u.generations} long generations", u.ttft_s)
    row("  of it, waiting for a slot", u.queue_wait_s)
    row(f"ITL p50, {st.running} running, before a {st.prompt_tokens}-token prompt", st.itl_before_p50_ms, s1)
    row("  while it is prefilled: p50", st.itl_p50_ms, s1)
    row("  p99", st.itl_p99_ms, s1)
    row("  max", st.itl_max_ms, s1)
    row("  the long prompt's TTFT", st.long_ttft_s)
    row(f"TTFT, {fp.prompts} × {fp.prompt_tokens}-token prompts at once: first", fp.ttft_first_s)
    row("  median", fp.ttft_median_s)
    row("  last", fp.ttft_last_s)
    row(f"2 agents take turns ({t.first_prompt_tokens} tokens): TTFT 1st turn", t.ttft_first_s)
    row("  TTFT later turns", t.ttft_later_s)
    row("  fewest cached prompt tokens, later turns", t.cached_later_min, (1.0, 0, ""))
    row(f"prefix cache, {pc.prompt_tokens}-token prompt: TTFT cold", pc.ttft_cold_s)
    row(f"  {pc.cached_prompt_tokens} tokens cached", pc.ttft_cached_s)
    row("  speedup", pc.speedup, (1.0, 1, "×"))
    console.print(more)
    turns = Table(title="turn taking, per turn (medians over rounds)")
    for col in ("turn", "agent", "prompt tokens", "cached", "TTFT ms"):
        turns.add_column(col, justify="left" if col == "agent" else "right")
    for tf in t.turns:
        turns.add_row(str(tf.turn), tf.agent, str(tf.prompt_tokens), _med(tf.cached_prompt_tokens, 1, 0),
                      _med(tf.ttft_s, 1000, 0))
    console.print(turns)
