"""`agentdeck bench inference`: the engine's continuous batching against the naive path.

In one process, on one model, with the same prompts, sampling and token counts:
1. naive: N requests one after another through llama-cpp-python's high-level `Llama`;
2. engine: the same N requests submitted at once to the batching engine;
3. prefix cache: time to first token of a request with a long prompt (cold) and of a second
   one sharing that prompt's prefix (served from the slot's KV cache).
End-of-generation tokens are suppressed on both sides so each request produces exactly
--tokens tokens. Figures, not assertions: a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from agents.config import Config, SamplingConfig
from agents.errors import AgentdeckError
from agents.inference import Engine, resolve_model_path
from app.progress import LoadProgress

_CACHE_ROUNDS = 3  # the prefix-cache TTFTs are medians over this many fresh prefixes


class Side(msgspec.Struct, kw_only=True):
    requests: int
    tokens: int  # generated, all requests together
    seconds: float  # first submit -> last token
    tokens_per_s: float
    ttft_mean_s: float  # from the moment all N were asked for (agents asking at once)
    ttft_own_mean_s: float  # from the moment each request actually started being served


class PrefixCache(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    cached_prompt_tokens: int
    ttft_cold_s: float
    ttft_cached_s: float
    speedup: float


class Report(msgspec.Struct, kw_only=True):
    model: str
    device: str
    threads: int
    agents: int
    tokens_per_request: int
    engine_load_s: float
    naive: Side
    engine: Side
    speedup: float  # engine tokens/s over naive tokens/s
    prefix_cache: PrefixCache


def add_arguments(parser: argparse.ArgumentParser, count: Callable[[str], int]) -> None:
    """`count` parses a whole number >= 1 (the CLI's own, ASCII digits only)."""
    parser.add_argument("--agents", type=count, default=5, metavar="N",
                        help="concurrent requests (default 5)")
    parser.add_argument(
        "--tokens", type=count, default=128, metavar="N", help="tokens generated per request (default 128)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="GGUF model (default: config, else the embedded SmolLM2)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    err = Console(stderr=True)
    try:
        report = asyncio.run(_bench(args, config, err))
    except AgentdeckError as e:
        print(f"agentdeck: {e}", file=sys.stderr)  # one line, never wrapped (as app.cli does)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        _print_table(report, Console())
    return 0


# --- the measurements ----------------------------------------------------------------------


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "system", "content": f"You are agent {i} of a crew of {n}. Be thorough."},
            {"role": "user", "content": f"Write a detailed status report on subsystem {i}."},
        ]
        for i in range(n)
    ]


async def _bench(args: argparse.Namespace, config: Config, err: Console) -> Report:
    inf = config.inference
    path = resolve_model_path(args.model, inf.model)
    n, tokens = args.agents, args.tokens
    threads = inf.threads or os.cpu_count() or 1
    # Enough context for N sequences of prompt + tokens, and for the long cache prompt.
    n_ctx = max(inf.n_ctx, n * (tokens + 128) + 1024)
    inf = msgspec.structs.replace(inf, slots=max(inf.slots, n), n_ctx=n_ctx, threads=threads)
    sampling = SamplingConfig()

    with LoadProgress(err, f"loading {path.name}") as progress:
        engine = Engine(inf, model_path=path, sampling=sampling, progress=progress)
        await engine.start()
    try:
        naive = await asyncio.to_thread(_naive, path, inf, sampling, _prompts(n), tokens, err)
        batched = await _engine_side(engine, _prompts(n), tokens)
        cache = await _prefix_cache(engine)
        device = engine.snapshot().device
    finally:
        await engine.stop()
    return Report(
        model=path.name,
        device=device,
        threads=threads,
        agents=n,
        tokens_per_request=tokens,
        engine_load_s=round(engine.load_time_s or 0.0, 3),
        naive=naive,
        engine=batched,
        speedup=round(batched.tokens_per_s / naive.tokens_per_s, 2) if naive.tokens_per_s else 0,
        prefix_cache=cache,
    )


def _naive(
    path: Any,
    inf: Any,
    sampling: SamplingConfig,
    prompts: list[list[dict[str, str]]],
    tokens: int,
    err: Console,
) -> Side:
    """N requests one after another through the high-level Llama (its own thread)."""
    import llama_cpp
    import numpy as np

    with LoadProgress(err, "loading the high-level Llama") as progress:
        progress(0.0)
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=inf.n_ctx,
            n_batch=inf.n_batch,
            n_threads=inf.threads,
            n_threads_batch=inf.threads,
            n_gpu_layers=inf.n_gpu_layers,
            seed=inf.seed,
            verbose=False,
        )
        progress(1.0)
    vocab = llm._model.vocab  # to list the end-of-generation tokens, as the engine does
    eog = np.array([t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)], dtype=np.intc)
    calls: list[float] = []

    def suppress_eog(_ids: Any, scores: Any) -> Any:
        calls.append(time.perf_counter())  # first call: the first token's logits are ready
        scores[eog] = -np.inf
        return scores

    def one(messages: list[dict[str, str]], max_tokens: int) -> tuple[int, float]:
        calls.clear()
        out = llm.create_chat_completion(
            messages=messages,
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            logits_processor=llama_cpp.LogitsProcessorList([suppress_eog]),
        )
        return int(out["usage"]["completion_tokens"]), calls[0] if calls else time.perf_counter()

    try:
        one([{"role": "user", "content": "warm up"}], 4)
        t0 = time.perf_counter()
        total, from_start, own = 0, [], []
        for messages in prompts:
            started = time.perf_counter()
            n, first = one(messages, tokens)
            total += n
            from_start.append(first - t0)
            own.append(first - started)
        seconds = time.perf_counter() - t0
    finally:
        llm.close()
    return _side(len(prompts), total, seconds, from_start, own)


async def _engine_side(engine: Engine, prompts: list[list[dict[str, str]]], tokens: int) -> Side:
    await engine.submit([{"role": "user", "content": "warm up"}], max_tokens=4, agent="warmup")
    t0 = time.perf_counter()
    gens = [
        engine.submit(m, agent=f"bench{i}", max_tokens=tokens, ignore_eos=True) for i, m in enumerate(prompts)
    ]
    results = await asyncio.gather(*(g.result() for g in gens))
    seconds = time.perf_counter() - t0
    bad = [r for r in results if r.finish_reason != "length"]
    if bad:
        raise AgentdeckError(f"engine request ended early: {bad[0].finish_reason} {bad[0].error}")
    total = sum(r.usage.completion_tokens for r in results)
    ttft = [r.usage.ttft_s or 0.0 for r in results]
    own = [(r.usage.ttft_s or 0.0) - r.usage.queue_wait_s for r in results]
    return _side(len(prompts), total, seconds, ttft, own)


def _side(requests: int, tokens: int, seconds: float, ttft: list[float], own: list[float]) -> Side:
    """One side's figures, rounded the same way for both."""
    return Side(
        requests=requests,
        tokens=tokens,
        seconds=round(seconds, 3),
        tokens_per_s=round(tokens / seconds, 1),
        ttft_mean_s=round(statistics.mean(ttft), 3),
        ttft_own_mean_s=round(statistics.mean(own), 3),
    )


async def _prefix_cache(engine: Engine) -> PrefixCache:
    """A long shared prompt prefix: TTFT cold vs served from the slot's KV cache."""
    cold, cached, last = [], [], None
    for _ in range(_CACHE_ROUNDS):
        nonce = uuid.uuid4().hex  # a prefix no slot has seen: the first request is cold
        system = f"Session {nonce}. " + " ".join(
            f"Rule {i}: keep notes short, cite files and lines, ask before risky steps." for i in range(40)
        )
        first = await engine.submit(
            [{"role": "system", "content": system}, {"role": "user", "content": "Status?"}],
            agent="bench-cache",
            max_tokens=4,
            ignore_eos=True,
        )
        second = await engine.submit(
            [{"role": "system", "content": system}, {"role": "user", "content": "Next step?"}],
            agent="bench-cache",
            max_tokens=4,
            ignore_eos=True,
        )
        cold.append(first.usage.ttft_s or 0.0)
        cached.append(second.usage.ttft_s or 0.0)
        last = second
    assert last is not None
    c, h = statistics.median(cold), statistics.median(cached)
    return PrefixCache(
        prompt_tokens=last.usage.prompt_tokens,
        cached_prompt_tokens=last.usage.cached_prompt_tokens,
        ttft_cold_s=round(c, 4),
        ttft_cached_s=round(h, 4),
        speedup=round(c / h, 1) if h > 0 else 0.0,
    )


# --- presentation ------------------------------------------------------------------------


def _print_table(r: Report, console: Console) -> None:
    console.print(
        f"[bold]inference benchmark[/] · {r.model} · {r.device} · {r.threads} threads · "
        f"{r.agents} requests × {r.tokens_per_request} tokens · model load {r.engine_load_s:.2f} s"
    )
    table = Table(caption="TTFT: mean time to first token, from when all were asked / when each was served")
    table.add_column("path")
    table.add_column("tokens", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("tokens/s", justify="right")
    table.add_column("TTFT, all asked at once", justify="right")
    table.add_column("TTFT, own start", justify="right")
    for name, side in (
        ("naive (Llama, in turn)", r.naive),
        ("engine (batched)", r.engine),
    ):
        table.add_row(
            name,
            str(side.tokens),
            f"{side.seconds:.2f}",
            f"{side.tokens_per_s:.1f}",
            f"{side.ttft_mean_s:.3f} s",
            f"{side.ttft_own_mean_s:.3f} s",
        )
    console.print(table)
    console.print(f"engine / naive throughput: [bold]{r.speedup:.2f}×[/]")
    pc = r.prefix_cache
    console.print(
        f"prefix cache: {pc.prompt_tokens}-token prompt, {pc.cached_prompt_tokens} reused · "
        f"TTFT cold {pc.ttft_cold_s * 1000:.0f} ms → cached {pc.ttft_cached_s * 1000:.0f} ms "
        f"([bold]{pc.speedup:.1f}×[/])"
    )
