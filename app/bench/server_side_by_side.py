"""`agentdeck bench inference --vs-server`: the embedded engine against llama-cpp-python's
OpenAI-compatible server (`python -m llama_cpp.server`) on the same GGUF, machine, threads
and batch size, in one run.

Each round runs both sides, in an order rotated each round (a shared machine drifts), on
the same prompts: N requests asked for at once (tokens/s, TTFT), then two agents with long
system prompts taking turns (TTFT of their first and later turns, and the prompt tokens
each side reports as already cached: its per-agent prefix reuse). Figures are medians and
ranges over rounds; ratios are engine ÷ server, per round. Greedy sampling on both sides;
end-of-generation is not suppressed (a server cannot be asked to), so each side's
generated tokens are counted, not assumed. A server whose stream carries no usage
(llama-cpp-python 0.3.36) reports no prompt or cached tokens: those figures are null, not 0;
its prefix reuse then shows only in the later turns' TTFT.

The server is a child process on a free loopback port, always stopped: at the end, on an
error and on Ctrl-C (which the terminal sends to it too); its start is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
from pathlib import Path

import msgspec
import openai
from rich.console import Console
from rich.table import Table

from agents.config import Config
from agents.config.schema import BackendConfig
from agents.errors import AgentdeckError, ModelError
from agents.inference import Backend, build_backend, build_backends
from app.bench import harness
from app.bench import inference_scenarios as sc
from app.bench.harness import Stat, say, stat
from app.bench.llama_cpp_server import ALIAS, LlamaCppServer, missing
from app.progress import LoadProgress

SIDES = ("engine", "server")
SERVER_BACKEND = "llama-cpp-server"  # the name the server's backend gets in this run
TURN_TOKENS = 16  # tokens per turn, as the turn-taking scenario asks



class AgentReuse(msgspec.Struct, kw_only=True):
    """One turn-taking agent on one side: how much of its prompt the side found cached."""

    agent: str
    prompt_tokens: int | None  # its last turn's prompt (last round); None: not reported
    cached_prompt_tokens: Stat | None  # median over its later turns; None: not reported
    ttft_later_s: Stat  # median over its later turns


class SideFigures(msgspec.Struct, kw_only=True):
    device: str
    load_s: float
    tokens: list[int]  # generated per round, all N requests together
    tokens_per_s: Stat  # all N requests' tokens over the time from asking to the last token
    ttft_s: Stat  # mean time to first token, from when all N were asked for at once
    turn_ttft_first_s: Stat  # median over each agent's first (cold) turn
    turn_ttft_later_s: Stat  # median over the later turns
    usage_reported: bool  # False: the side reports no usage, so no prompt or cached tokens
    agents: list[AgentReuse]


class Ratios(msgspec.Struct, kw_only=True):
    """engine ÷ server, per round: above 1 the engine is faster in tokens/s, slower in TTFT."""

    tokens_per_s: Stat
    ttft_s: Stat
    turn_ttft_later_s: Stat


class VersusServer(msgspec.Struct, kw_only=True):
    model: str
    server: str  # what ran on the server side, e.g. "llama_cpp.server 0.3.36"
    server_args: list[str]  # its settings beyond the model, port and alias
    threads: int
    n_batch: int
    agents: int
    tokens_per_request: int
    rounds: int
    long_prompt: int
    orders: list[list[str]]
    engine: SideFigures
    llama_cpp_server: SideFigures
    engine_over_server: Ratios


class _Round(msgspec.Struct, kw_only=True):
    run: sc.SideRun
    turns: list[sc.Turn]


def _contexts(n: int, tokens: int, long: int, base: int) -> tuple[int, int]:
    """(engine KV cells, server n_ctx): room for the longest sequence; the engine's for N
    at once in one pool or in per-slot shares, the server's for one (it serves one at a time)."""
    turn = round(long * sc.TURN_SCALE) + sc.TURNS * (TURN_TOKENS + 48) + 64
    one = max(turn, tokens + 128)
    server = max(512, -(-one // 256) * 256)
    need = max(n * (tokens + 128), 2 * turn, max(n, 4) * one) + 256
    return max(base, -(-need // 256) * 256), server


async def run_versus(args: argparse.Namespace, config: Config, path: Path, err: Console) -> VersusServer:
    """Both sides on `path`; the server is stopped however this ends."""
    reason = missing()
    if reason:
        raise ModelError(f"--vs-server needs llama-cpp-python's server: {reason}")
    inf = config.inference
    n, tokens, rounds, long = args.agents, args.tokens, args.rounds, args.long_prompt
    threads = inf.threads or os.cpu_count() or 1
    n_ctx, server_ctx = _contexts(n, tokens, long, inf.n_ctx)
    inf = msgspec.structs.replace(inf, slots=max(inf.slots, n, 2), n_ctx=n_ctx, threads=threads)
    server_args = ["--n_threads", str(threads), "--n_threads_batch", str(threads),
                   "--n_batch", str(inf.n_batch), "--n_gpu_layers", str(inf.n_gpu_layers),
                   # The embedded engine computes logits for the last prompt token only.
                   "--logits_all", "False"]
    server = LlamaCppServer(model=path, n_ctx=server_ctx, extra_args=server_args)
    engine: Backend | None = None
    remote: Backend | None = None
    try:
        server.launch()
        with LoadProgress(err, f"loading {path.name} in the engine and in llama_cpp.server") as progress:
            engine = build_backend(inf, model=path, sampling=sc.greedy(), progress=progress)
            # The engine loads while the server does; a server that will not answer is an error.
            outcomes = await asyncio.gather(engine.start(), _ready(server), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        settings = BackendConfig(kind="openai", url=server.url, model=ALIAS, max_concurrent=n,
                                 stall_timeout_s=600.0, retries=0)
        remote_config = msgspec.structs.replace(config, backends={SERVER_BACKEND: settings})
        chosen = harness.choose_backend(remote_config, SERVER_BACKEND)
        remote = build_backends(harness.only_on(remote_config, chosen), sampling=sc.greedy())
        await remote.start()
        sides: dict[str, Backend] = {"engine": engine, "server": remote}
        for side in sides.values():
            result = await side.submit([{"role": "user", "content": "warm up"}], max_tokens=4, agent="warmup")
            if result.finish_reason not in ("stop", "length"):
                raise AgentdeckError(f"warm-up: request ended {result.finish_reason}: {result.error}")
        reported = await _server_reports_usage(server.url)
        done: dict[str, list[_Round]] = {s: [] for s in SIDES}
        orders: list[list[str]] = []
        for r in range(rounds):
            order = harness.order(SIDES, r)
            orders.append(order)
            batch = sc.prompts(n, f"Round {r + 1}.")
            # The same cold system prompts for both sides: counted once, by the engine.
            systems = [await sc.filler(engine, round(long * sc.TURN_SCALE)) for _ in range(2)]
            for name in order:
                say(err, f"round {r + 1}/{rounds}: {name}")
                side = sides[name]
                run = await sc.engine_side(side, batch, tokens, exact=False)
                turns = await sc.turns_with(side, systems, TURN_TOKENS, exact=False)
                done[name].append(_Round(run=run, turns=turns))
        engine_figures = _figures(done["engine"], engine, usage_reported=True)
        server_figures = _figures(done["server"], remote, usage_reported=reported)
    finally:
        with contextlib.suppress(Exception):
            if remote is not None:
                await remote.stop()
        with contextlib.suppress(Exception):
            if engine is not None:
                await engine.stop()
        await asyncio.to_thread(server.stop)  # bounded: SIGTERM, then SIGKILL
    return VersusServer(
        model=path.name, server=f"llama_cpp.server {_llama_cpp_version()}", server_args=server_args,
        threads=threads, n_batch=inf.n_batch, agents=n, tokens_per_request=tokens, rounds=rounds,
        long_prompt=long, orders=orders, engine=engine_figures, llama_cpp_server=server_figures,
        engine_over_server=Ratios(
            tokens_per_s=_ratios(engine_figures.tokens_per_s, server_figures.tokens_per_s),
            ttft_s=_ratios(engine_figures.ttft_s, server_figures.ttft_s),
            turn_ttft_later_s=_ratios(engine_figures.turn_ttft_later_s, server_figures.turn_ttft_later_s),
        ),
    )


async def _ready(server: LlamaCppServer) -> None:
    try:
        await asyncio.to_thread(server.wait_ready)
    except RuntimeError as e:
        raise ModelError(f"llama_cpp.server did not start: {str(e).splitlines()[0]}") from None


async def _server_reports_usage(url: str) -> bool:
    """Does the server's stream end with usage (where cached prompt tokens would be)?"""
    client = openai.AsyncOpenAI(base_url=url, api_key="none", timeout=60.0, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=1, stream=True,
            stream_options={"include_usage": True})
        return any([chunk.usage is not None async for chunk in stream])
    except openai.OpenAIError:
        return False
    finally:
        await client.close()


def _llama_cpp_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "?"))



# --- figures over rounds -----------------------------------------------------------------------



def _ratios(top: Stat, bottom: Stat) -> Stat:
    return stat([t / b if b else 0.0 for t, b in zip(top.rounds, bottom.rounds, strict=True)], 3)


def _median_cached(turns: list[sc.Turn]) -> float:
    return statistics.median(t.cached_prompt_tokens for t in turns)


def _figures(rounds: list[_Round], side: Backend, *, usage_reported: bool) -> SideFigures:
    runs = [r.run for r in rounds]
    names = list(dict.fromkeys(t.agent for t in rounds[0].turns))
    first = len(names)  # each agent's first turn is cold

    def later(rs: list[sc.Turn], agent: str) -> list[sc.Turn]:
        return [t for t in rs[first:] if t.agent == agent]

    agents = [
        AgentReuse(
            agent=name,
            prompt_tokens=later(rounds[-1].turns, name)[-1].prompt_tokens if usage_reported else None,
            cached_prompt_tokens=stat([_median_cached(later(r.turns, name))
                                        for r in rounds], 0) if usage_reported else None,
            ttft_later_s=stat([statistics.median(t.ttft for t in later(r.turns, name)) for r in rounds], 3),
        )
        for name in names
    ]
    snapshot = side.snapshot()
    return SideFigures(
        device=snapshot.device,
        load_s=round(side.load_time_s or 0.0, 3),
        tokens=[r.tokens for r in runs],
        tokens_per_s=stat([r.tokens / r.seconds for r in runs], 1),
        ttft_s=stat([statistics.mean(r.ttft) for r in runs], 3),
        turn_ttft_first_s=stat([statistics.median(t.ttft for t in r.turns[:first]) for r in rounds], 3),
        turn_ttft_later_s=stat([statistics.median(t.ttft for t in r.turns[first:]) for r in rounds], 3),
        usage_reported=usage_reported,
        agents=agents,
    )


# --- presentation ------------------------------------------------------------------------------


def _cell(s: Stat | None, scale: float = 1.0, digits: int = 1) -> str:
    if s is None:
        return "[dim]not reported[/]"
    return f"{s.median * scale:.{digits}f} [dim]{s.min * scale:.{digits}f}–{s.max * scale:.{digits}f}[/]"


def print_versus(r: VersusServer, console: Console) -> None:
    e, s, q = r.engine, r.llama_cpp_server, r.engine_over_server
    console.print(
        f"[bold]engine vs {r.server}[/] · {r.model} · {r.threads} threads · n_batch {r.n_batch} · "
        f"{r.agents} requests × {r.tokens_per_request} tokens · {r.rounds} rounds, interleaved"
    )
    table = Table(caption="median, then min–max over rounds · greedy; each side's own generated tokens · "
                          "ratio: engine ÷ server, per round")
    for col in ("figure", "engine", "llama_cpp.server", "engine ÷ server"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    table.add_row("tokens/s, all at once", _cell(e.tokens_per_s), _cell(s.tokens_per_s),
                  _cell(q.tokens_per_s, 1, 2) + "×")
    table.add_row("TTFT ms (mean, from asking)", _cell(e.ttft_s, 1000, 0), _cell(s.ttft_s, 1000, 0),
                  _cell(q.ttft_s, 1, 2) + "×")
    table.add_row("turns: TTFT ms, 1st turn", _cell(e.turn_ttft_first_s, 1000, 0),
                  _cell(s.turn_ttft_first_s, 1000, 0), "")
    table.add_row("turns: TTFT ms, later turns", _cell(e.turn_ttft_later_s, 1000, 0),
                  _cell(s.turn_ttft_later_s, 1000, 0), _cell(q.turn_ttft_later_s, 1, 2) + "×")
    for ea, sa in zip(e.agents, s.agents, strict=True):
        table.add_row(f"  {ea.agent}: cached of {ea.prompt_tokens} prompt tokens",
                      _cell(ea.cached_prompt_tokens, 1, 0), _cell(sa.cached_prompt_tokens, 1, 0), "")
        table.add_row(f"  {ea.agent}: TTFT ms, later turns", _cell(ea.ttft_later_s, 1000, 0),
                      _cell(sa.ttft_later_s, 1000, 0), "")
    console.print(table)
    console.print(f"engine: {e.device}, loaded in {e.load_s:.2f} s · server: {s.device} "
                  f"({' '.join(r.server_args)})")
    console.print(f"generated tokens per round: engine {e.tokens}, server {s.tokens}")


__all__ = ["VersusServer", "print_versus", "run_versus"]
