"""The measurements behind `agentdeck bench inference` (see app/bench/inference.py).

Three throughput sides run the same prompts with greedy sampling and end-of-generation
suppressed, so each makes exactly `tokens` tokens per request:
- `Naive`: llama-cpp-python's high-level `Llama`, requests one after another;
- `Reference`: llama.cpp's low-level batch API with no scheduling at all: prefill every
  prompt, then one `llama_decode` per step with one token per sequence, numpy argmax;
- `engine_side`: the engine, all requests submitted at once.
Then engine-only scenarios: TTFT under load, the stall a long prefill causes, fair prefill
sharing, turn-taking agents and the prefix cache. Only the `Backend` protocol is used, so
the same bench measures any commit of the engine, and any other backend (`--backend`).
A server cannot suppress end-of-generation (`ignore_eos` is not in the OpenAI API): with
`exact=False` a request may also end "stop", short of its tokens; the figures count what
it made.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.config import InferenceConfig, SamplingConfig
from agents.errors import AgentdeckError, ModelError
from agents.inference import Backend
from agents.inference.chat import ChatTemplate
from agents.inference.model import init_backend

Messages = list[dict[str, str]]
TURNS = 3  # turns per agent in the turn-taking scenario
# Scenario prompt sizes relative to --long-prompt (defaults 1,800 / 2,300 / 1,600 tokens).
FAIR_SCALE = 2300 / 1800
TURN_SCALE = 1600 / 1800
CACHE_SCALE = 700 / 1800  # the prefix-cache prompt (~700 tokens, as this bench always had)


def greedy() -> SamplingConfig:
    """Temperature 0 and no repeat penalty: the same argmax on every side."""
    return SamplingConfig(temperature=0.0, repeat_penalty=1.0, timeout_s=600.0)


def prompts(n: int, tag: str) -> list[Messages]:
    """The throughput prompts; `tag` leads, so no cache holds a prefix of last round's."""
    return [
        [
            {"role": "system", "content": f"{tag} You are agent {i} of a crew of {n}. Be thorough."},
            {"role": "user", "content": f"Write a detailed status report on subsystem {i}."},
        ]
        for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


@dataclass
class SideRun:
    """One side, one round."""

    tokens: int
    seconds: float
    ttft: list[float]  # from the moment all N were asked for
    ttft_own: list[float]  # from the moment each request started being served
    itl: list[float]  # inter-token gaps, seconds, all requests pooled


# --- naive: the high-level Llama, one request after another ---------------------------------


class Naive:
    """Loaded once (in a worker thread) and reused each round."""

    def __init__(self, path: Any, inf: InferenceConfig) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=inf.n_ctx,
            n_batch=inf.n_batch,
            n_threads=inf.threads,
            n_threads_batch=inf.threads,
            n_gpu_layers=inf.n_gpu_layers,
            seed=inf.seed,
            verbose=False,
        )
        vocab = self.llm._model.vocab  # to list the end-of-generation tokens, as the engine does
        self.eog = np.array(
            [t for t in range(self.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)], dtype=np.intc
        )
        self.calls: list[float] = []
        self.processors = llama_cpp.LogitsProcessorList([self._suppress_eog])
        self._one([{"role": "user", "content": "warm up"}], 4)

    def _suppress_eog(self, _ids: Any, scores: Any) -> Any:
        self.calls.append(time.perf_counter())  # once per token, when its logits are ready
        scores[self.eog] = -np.inf
        return scores

    def _one(self, messages: Messages, max_tokens: int) -> int:
        self.calls.clear()
        out = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            logits_processor=self.processors,
        )
        return int(out["usage"]["completion_tokens"])  # type: ignore[index]

    def round(self, batch: list[Messages], tokens: int) -> SideRun:
        self.llm.reset()  # the next eval starts at position 0: the KV holds nothing reusable
        t0 = time.perf_counter()
        run = SideRun(0, 0.0, [], [], [])
        for messages in batch:
            started = time.perf_counter()
            run.tokens += self._one(messages, tokens)
            first = self.calls[0] if self.calls else time.perf_counter()
            run.ttft.append(first - t0)
            run.ttft_own.append(first - started)
            run.itl += gaps(self.calls)
        run.seconds = time.perf_counter() - t0
        return run

    def close(self) -> None:
        self.llm.close()


# --- reference: the low-level batch API, no scheduling ------------------------------------


class Reference:
    """Own model and context (n_seq_max = N, the engine's n_ctx, n_batch, threads and KV
    layout), loaded once in a worker thread. The layout follows the engine's config so the
    two attend over the same cells; engines before it was a switch always used one pool."""

    def __init__(self, path: Any, inf: InferenceConfig, n_seq: int) -> None:
        import llama_cpp as lib

        init_backend()
        self.lib = lib
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0x7FFFFFFF if inf.n_gpu_layers < 0 else inf.n_gpu_layers
        self.model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise ModelError(f"reference side: llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        params.n_ctx = inf.n_ctx
        params.n_batch = params.n_ubatch = inf.n_batch
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = inf.threads
        params.kv_unified = bool(getattr(inf, "kv_unified", True))
        params.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise ModelError(f"reference side: no llama context (n_ctx={inf.n_ctx}, sequences={n_seq})")
        self.mem = lib.llama_get_memory(self.ctx)
        self.n_batch = int(lib.llama_n_batch(self.ctx))
        self.batch = lib.llama_batch_init(max(self.n_batch, n_seq), 0, 1)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.eog = np.array([t for t in range(self.n_vocab) if lib.llama_vocab_is_eog(self.vocab, t)])
        self.bos = int(lib.llama_vocab_bos(self.vocab))
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        raw = lib.llama_model_chat_template(self.model, None)
        self.template = ChatTemplate(  # the scheduler renders prompts the same way
            raw.decode() if raw else None, bos_token=self._text(self.bos),
            eos_token=self._text(int(lib.llama_vocab_eos(self.vocab))),
        )
        self.round(prompts(n_seq, "Warm-up."), 4)

    def _text(self, token: int) -> str:
        raw = self.lib.llama_vocab_get_text(self.vocab, token) if token >= 0 else None
        return raw.decode("utf-8", "replace") if raw else ""

    def _tokenize(self, messages: Messages) -> list[int]:
        data = self.template.render(messages).encode()
        buf = (self.lib.llama_token * (len(data) + 16))()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, True)
        tokens = list(buf[:n])
        if self.add_bos and self.bos >= 0 and tokens[:1] != [self.bos]:
            tokens.insert(0, self.bos)
        return tokens

    def _argmax(self, idx: int) -> int:
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, idx), shape=(self.n_vocab,))
        logits[self.eog] = -np.inf  # end-of-generation suppressed, as on the other sides
        return int(logits.argmax())

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(entries)
        ret = self.lib.llama_decode(self.ctx, b)
        if ret != 0:
            raise AgentdeckError(f"reference side: llama_decode returned {ret}")

    def round(self, batch: list[Messages], tokens: int) -> SideRun:
        self.lib.llama_memory_clear(self.mem, True)
        t0 = time.perf_counter()
        toks = [self._tokenize(m) for m in batch]
        flat = [(t, pos, s, pos == len(ts) - 1) for s, ts in enumerate(toks) for pos, t in enumerate(ts)]
        nxt = [0] * len(batch)
        for start in range(0, len(flat), self.n_batch):  # prefill every prompt
            chunk = flat[start : start + self.n_batch]
            self._decode(chunk)
            for i, (_, _, seq, last) in enumerate(chunk):
                if last:
                    nxt[seq] = self._argmax(i)
        first = time.perf_counter()
        steps = [first]
        pos = [len(ts) for ts in toks]
        for _ in range(tokens - 1):  # one token per sequence per step
            self._decode([(nxt[s], pos[s], s, True) for s in range(len(batch))])
            nxt = [self._argmax(s) for s in range(len(batch))]
            pos = [p + 1 for p in pos]
            steps.append(time.perf_counter())
        seconds = time.perf_counter() - t0
        n = len(batch)
        return SideRun(n * tokens, seconds, [first - t0] * n, [first - t0] * n, gaps(steps))

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


# --- the engine ------------------------------------------------------------------------------


@dataclass
class Stream:
    """A generation read piece by piece, with the time each piece arrived."""

    gen: Any
    until: int = 0  # `reached` is set once this many pieces have arrived
    stamps: list[float] = field(default_factory=list)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None

    def start(self) -> Stream:
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> Any:
        async for _ in self.gen:
            self.stamps.append(time.perf_counter())
            if len(self.stamps) >= self.until:
                self.reached.set()
        self.reached.set()  # ended early: nobody waits forever
        return await self.gen

    async def result(self) -> Any:
        assert self.task is not None
        return await self.task


def _check(result: Any, what: str, ok: tuple[str, ...] = ("length",), *, exact: bool = True) -> None:
    """Every measured request must make all its tokens (end-of-generation is suppressed),
    or with `exact=False` end by itself ("stop") before that."""
    if result.finish_reason not in ok and (exact or result.finish_reason != "stop"):
        raise AgentdeckError(f"{what}: request ended {result.finish_reason}: {result.error}")


async def engine_side(engine: Backend, batch: list[Messages], tokens: int, *, exact: bool = True) -> SideRun:
    t0 = time.perf_counter()
    streams = [
        Stream(engine.submit(m, agent=f"bench{i}", max_tokens=tokens, ignore_eos=True)).start()
        for i, m in enumerate(batch)
    ]
    results = [await s.result() for s in streams]
    seconds = time.perf_counter() - t0
    for r in results:
        _check(r, "throughput", exact=exact)
    # Gaps between streamed pieces: one piece per token, bar a multi-byte character split
    # across tokens (rare in this English text).
    return SideRun(
        tokens=sum(r.usage.completion_tokens for r in results),
        seconds=seconds,
        ttft=[r.usage.ttft_s or 0.0 for r in results],
        ttft_own=[(r.usage.ttft_s or 0.0) - r.usage.queue_wait_s for r in results],
        itl=[g for s in streams for g in gaps(s.stamps)],
    )


async def filler(engine: Backend, target: int) -> str:
    """A fresh system prompt of about `target` tokens (a new nonce: cold in every cache)."""
    head = f"Session {uuid.uuid4().hex}."

    def text(n: int) -> str:
        rules = (f" Rule {i}: keep notes short, cite files and lines, ask first." for i in range(n))
        return head + "".join(rules)

    n = max(1, target // 16)
    for _ in range(2):
        n = max(1, round(n * target / max(1, await engine.count_tokens(text(n)))))
    return text(n)


async def _cancel_all(streams: list[Stream], *, exact: bool = True) -> None:
    for s in streams:
        s.gen.cancel()
    for s in streams:
        _check(await s.result(), "background generation", ("length", "cancelled"), exact=exact)


async def ttft_under_load(engine: Backend, n: int, tokens: int, tag: str, *,
                          exact: bool = True) -> tuple[float, float]:
    """(TTFT, queue wait) of a priority-10 request once N long generations are streaming."""
    streams = [
        Stream(engine.submit(m, agent=f"load{i}", max_tokens=4 * tokens, ignore_eos=True),
               until=max(1, tokens // 2)).start()
        for i, m in enumerate(prompts(n, tag))
    ]
    for s in streams:
        await s.reached.wait()
    urgent = await engine.submit(
        [{"role": "user", "content": f"{tag} Urgent: is the build green?"}],
        agent="urgent", priority=10, max_tokens=4, ignore_eos=True,
    )
    await _cancel_all(streams, exact=exact)
    _check(urgent, "priority request", exact=exact)
    return urgent.usage.ttft_s or 0.0, urgent.usage.queue_wait_s


@dataclass
class Stall:
    running: int
    prompt_tokens: int
    ttft: float  # of the long prompt
    during: list[float]  # running sequences' gaps while it was prefilled
    before: list[float]  # their gaps before it arrived


async def prefill_stall(engine: Backend, running: int, tokens: int, long_prompt: int, tag: str, *,
                        exact: bool = True) -> Stall:
    """Inter-token gaps of `running` generating sequences while a long prompt is prefilled."""
    settle = 8  # pieces each must have streamed first: past their own prefill
    system = await filler(engine, long_prompt)
    streams = [
        Stream(engine.submit(m, agent=f"run{i}", max_tokens=max(4 * tokens, 256), ignore_eos=True),
               until=settle).start()
        for i, m in enumerate(prompts(running, tag))
    ]
    for s in streams:
        await s.reached.wait()
    t_in = time.perf_counter()
    long = Stream(engine.submit([{"role": "system", "content": system}, {"role": "user", "content": "Go."}],
                                agent="longone", max_tokens=1, ignore_eos=True)).start()
    result = await long.result()
    t_first = long.stamps[0] if long.stamps else time.perf_counter()
    await _cancel_all(streams, exact=exact)
    _check(result, "long prompt", exact=exact)
    # The step that gave the long prompt its first token also gave the running sequences a
    # piece, handed over in the same callback (a few microseconds either side of t_first):
    # a gap starting there is the first one after the prefill, not during it.
    end = t_first - 0.001
    during, before = [], []
    for s in streams:
        for a, b in itertools.pairwise(s.stamps[2:]):  # the first gaps overlap their own prefill
            if b > t_in and a < end:
                during.append(b - a)
            elif b <= t_in:
                before.append(b - a)
    return Stall(running, result.usage.prompt_tokens, result.usage.ttft_s or 0.0, during, before)


async def fair_prefill(engine: Backend, long_prompt: int, *, exact: bool = True) -> tuple[int, list[float]]:
    """(prompt tokens, sorted TTFTs) of 4 long prompts submitted at once."""
    systems = [await filler(engine, round(long_prompt * FAIR_SCALE)) for _ in range(4)]
    gens = [
        engine.submit([{"role": "system", "content": s}, {"role": "user", "content": "Summarise."}],
                      agent=f"fair{i}", max_tokens=1, ignore_eos=True)
        for i, s in enumerate(systems)
    ]
    results = [await g for g in gens]
    for r in results:
        _check(r, "long prompts", exact=exact)
    return results[0].usage.prompt_tokens, sorted(r.usage.ttft_s or 0.0 for r in results)


@dataclass
class Turn:
    agent: str
    prompt_tokens: int
    cached_prompt_tokens: int
    ttft: float


async def turns(engine: Backend, long_prompt: int, tokens: int, *, exact: bool = True) -> list[Turn]:
    """Two agents with long system prompts take turns; each turn extends its own chat."""
    systems = [await filler(engine, round(long_prompt * TURN_SCALE)) for _ in range(2)]
    return await turns_with(engine, systems, tokens, exact=exact)


async def turns_with(engine: Backend, systems: list[str], tokens: int, *, exact: bool = True) -> list[Turn]:
    """The turn-taking scenario on given system prompts, one agent each (alpha, beta, ...)."""
    names = ("alpha", "beta", "gamma", "delta")
    chats = {a: [{"role": "system", "content": system}] for a, system in zip(names, systems, strict=False)}
    out = []
    for k in range(TURNS):
        for agent, chat in chats.items():
            chat.append({"role": "user", "content": f"Turn {k + 1}: what next?"})
            r = await engine.submit(chat, agent=f"turns-{agent}", max_tokens=min(tokens, 16), ignore_eos=True)
            _check(r, "turn", exact=exact)
            chat.append({"role": "assistant", "content": r.text})
            u = r.usage
            out.append(Turn(agent, u.prompt_tokens, u.cached_prompt_tokens, u.ttft_s or 0.0))
    return out


async def prefix_cache(engine: Backend, long_prompt: int, *, exact: bool = True) -> tuple[Any, Any]:
    """Usage of a cold long-prompt request and of a second sharing its prefix."""
    system = await filler(engine, round(long_prompt * CACHE_SCALE))
    first = await engine.submit(
        [{"role": "system", "content": system}, {"role": "user", "content": "Status?"}],
        agent="bench-cache", max_tokens=4, ignore_eos=True,
    )
    second = await engine.submit(
        [{"role": "system", "content": system}, {"role": "user", "content": "Next step?"}],
        agent="bench-cache", max_tokens=4, ignore_eos=True,
    )
    _check(first, "prefix cache", exact=exact)
    _check(second, "prefix cache", exact=exact)
    return first.usage, second.usage
