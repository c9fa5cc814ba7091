"""A backend that thinks with a model server someone already runs: llama-server, vLLM,
SGLang, Ollama, llama-cpp-python's server — anything speaking the OpenAI chat API.

It meets `agents.inference.backend.Backend` as the embedded engine does. Requests wait in
a bounded client-side priority queue (higher agentdeck priority first, then age) with at
most `max_concurrent` in flight; each streams through the official `openai` async client
(its own retries off: ours are bounded, back off, and stop at the first token or the
deadline). A stream that sends nothing for `stall_timeout_s` fails as stalled; every
request ends by its deadline. A circuit breaker stops hammering a server that keeps
failing; the meter shows it. What differs per server (schema-constrained output,
priority, slot affinity, usage, the meter endpoint) lives in `flavours`.

The API key is resolved at start and kept in the clients only: every error line that
leaves this module goes through `_one_line`, which masks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx2
import msgspec
import openai

from agents import secrets
from agents.config import InferenceConfig, SamplingConfig
from agents.config.schema import BackendConfig
from agents.errors import ConfigError, ModelError
from agents.inference import flavours
from agents.inference.breaker import CircuitBreaker
from agents.inference.chat import MessageLike, as_dicts
from agents.inference.generation import Generation, deliver
from agents.inference.meter import BackendMeter, MeterSnapshot, MeterState, SlotInfo, Speed
from agents.inference.types import FinishReason, Result, Usage

log = logging.getLogger("agents.inference.openai")

MAX_QUEUED = 256  # requests waiting client-side per backend; more are refused at once
METER_POLL_S = 2.0  # a modest rate: the meter is for people, not for scheduling
STALE_S = 3 * METER_POLL_S  # a server reading older than this is not shown (the server stopped answering)
BACKOFF_S = 0.5  # first retry waits this, doubling, capped at BACKOFF_MAX_S
BACKOFF_MAX_S = 8.0
SPEED_WEIGHT = 0.2  # of the newest request in the moving speed averages
MIN_PROMPT_SAMPLE = 32  # prompt tokens a request must carry to time prefill
MAX_ERROR_CHARS = 300
ENV_PREFIX = "env:"


class BackendProbe(msgspec.Struct, kw_only=True):
    """What `doctor` shows of one server."""

    name: str
    url: str
    reachable: bool
    flavour: str
    models: list[str]
    model_listed: bool
    structured_output: bool
    slots: int | None
    breaker_open: bool
    problem: str  # one line; "" when fine; never the API key


def resolve_api_key(value: str, key_path: str) -> str:
    """`env:VAR` or `keyring:NAME` (or a literal) as the key; "" when none is configured."""
    if value.startswith(ENV_PREFIX):
        var = value.removeprefix(ENV_PREFIX)
        key = os.environ.get(var, "")
        if not key:
            raise ConfigError(f"{key_path}: environment variable {var} is not set")
        return key
    return secrets.resolve(value, key_path) if value else ""


class _Wake(threading.Event):
    """Generation.cancel() sets its wake event: here that cancels the request at once."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self._on_set = on_set

    def set(self) -> None:
        super().set()
        self._on_set()


class _Request:
    def __init__(self, gen: Generation, messages: list[dict[str, str]], *, agent: str, priority: int,
                 max_tokens: int, stop: Sequence[str], sampling: SamplingConfig,
                 schema: dict[str, Any] | None, deadline: float, order: int) -> None:
        self.gen = gen
        self.messages = messages
        self.agent = agent
        self.priority = priority
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.sampling = sampling
        self.schema = schema
        self.deadline = deadline
        self.order = order
        self.submitted = time.monotonic()
        self.admitted: float | None = None
        self.admission: int | None = None  # the order in which requests went to the server
        self.task: asyncio.Task[None] | None = None
        self.tokens = 0  # content pieces so far (about one token each)
        self.first_token_at: float | None = None

    def __lt__(self, other: _Request) -> bool:  # heap order: higher priority, then older
        return (-self.priority, self.order) < (-other.priority, other.order)

    def rate(self) -> float:
        if self.first_token_at is None or self.tokens < 2:
            return 0.0
        return (self.tokens - 1) / max(1e-6, time.monotonic() - self.first_token_at)


_Outcome = tuple[FinishReason, "flavours.UsageCounts | None"]


class _Failure(Exception):
    """One attempt failed: `retry` says whether another may follow, `server` whether it
    counts against the server (breaker)."""

    def __init__(self, message: str, *, retry: bool, server: bool, free: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.server = server
        self.free = free  # retry at once, not counted (the request changed, not the server)


class OpenAIBackend:
    """Meets `agents.inference.backend.Backend` for an OpenAI-compatible server."""

    def __init__(self, name: str, settings: BackendConfig, *, inference: InferenceConfig,
                 sampling: SamplingConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.settings = settings
        self.inference = inference
        self.default_sampling = sampling or SamplingConfig()
        self.url = settings.url.rstrip("/")
        # Paths outside the OpenAI API (/props, /slots, /tokenize) hang off the server root.
        self.root = re.sub(r"/v1$", "", self.url)
        self.flavour: str = "openai" if settings.flavour == "auto" else settings.flavour
        self.model = settings.model
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s, clock=clock)
        self.load_time_s: float | None = None
        self._key = ""
        self._client: openai.AsyncOpenAI | None = None
        self._http: httpx2.AsyncClient | None = None
        self._queue: list[_Request] = []  # a heap
        self._running: dict[int, _Request] = {}
        self._orders = itertools.count(1)
        self._admissions = itertools.count(1)
        self._state = "starting"
        self._speed: Speed | None = None
        # Off once the server refuses `priority` (vLLM without priority scheduling).
        self._send_priority = True
        self._server_slots: list[flavours.ServerSlot] = []
        self._total_slots: int | None = None
        self._pins: dict[str, int] = {}  # agent -> llama-server slot
        self._load = flavours.ServerLoad()
        self._polled_at = -STALE_S  # time.monotonic() of the last meter reading
        self._poller: asyncio.Task[None] | None = None
        self._refused = False  # the server refused our key at the last probe

    # -- the Backend protocol --

    @property
    def config(self) -> InferenceConfig | None:
        return None  # the server's context is its own: the caller's config stands

    async def start(self) -> None:
        """Resolve the key, open the clients, probe the server. An unreachable server does
        not stop the start (its requests fail with the reason, the breaker opens, other
        backends carry on); a reachable one that lacks the model is a ModelError."""
        began = time.monotonic()
        self._key = resolve_api_key(self.settings.api_key, f"backends.{self.name}.api_key")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"backends.{self.name}.url: {self.settings.url!r} is not an http(s) URL")
        timeout = httpx2.Timeout(self.settings.stall_timeout_s, connect=self.settings.connect_timeout_s)
        # The client's own retries are off: ours stop at the first token and at the deadline.
        self._client = openai.AsyncOpenAI(base_url=self.url, api_key=self._key or "none",
                                          timeout=timeout, max_retries=0)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._http = httpx2.AsyncClient(base_url=self.root, headers=headers,
                                        timeout=httpx2.Timeout(self.settings.connect_timeout_s))
        probe = await self.probe()
        if self._refused:
            await self._close_clients()
            raise ConfigError(f"backends.{self.name}.api_key: {probe.problem}")
        if probe.reachable and self.model and not probe.model_listed:
            await self._close_clients()
            raise ModelError(f"backend {self.name}: {probe.problem}")
        if probe.reachable and not self.model and probe.models:
            self.model = probe.models[0]
        if not probe.reachable:
            log.warning("backend %s: %s", self.name, probe.problem)
        self._state = "ready"
        self.load_time_s = time.monotonic() - began
        self._poller = asyncio.get_running_loop().create_task(self._poll_meter())

    async def stop(self) -> None:
        self._state = "stopped"
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        while self._queue:
            request = heapq.heappop(self._queue)
            self._finish(request, "", "cancelled", "backend stopped")
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_clients()

    def submit(self, messages: Sequence[MessageLike], *, agent: str = "",
               sampling: SamplingConfig | None = None, schema: dict[str, Any] | None = None,
               max_tokens: int | None = None, stop: Sequence[str] = (), priority: int = 0,
               timeout_s: float | None = None, deadline: float | None = None,
               ignore_eos: bool = False) -> Generation:
        """Queue a chat request; never blocks. Trouble comes back as an 'error' Result.
        ignore_eos is not part of the OpenAI API: ignored."""
        del ignore_eos
        loop = asyncio.get_running_loop()
        s = sampling or self.default_sampling
        n_max = s.max_tokens if max_tokens is None else max_tokens
        if n_max < 1:
            raise ValueError("max_tokens must be >= 1")
        if deadline is None:
            seconds = s.timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + (seconds if seconds > 0 else self.inference.max_call_s)
        holder: list[_Request] = []
        wake = _Wake(lambda: loop.call_soon_threadsafe(self._cancel, holder[0]) if holder else None)
        # A server may split a token over pieces: room for twice the cap (the result keeps all).
        gen = Generation(loop, 2 * n_max + 8, wake, deadline=deadline, agent=agent)
        request = _Request(gen, as_dicts(messages), agent=agent, priority=priority, max_tokens=n_max,
                           stop=stop, sampling=s, schema=schema, deadline=deadline, order=next(self._orders))
        holder.append(request)
        if self._state != "ready" or self._client is None:
            self._finish(request, "", "error", f"backend {self.name} is not running")
        elif len(self._queue) >= MAX_QUEUED:
            self._finish(request, "", "error", f"backend {self.name}: {MAX_QUEUED} requests already waiting")
        else:
            heapq.heappush(self._queue, request)
            self._pump()
        return gen

    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        """The server's tokenizer where it has one (within connect_timeout_s), else a
        conservative estimate."""
        path = flavours.tokenize_path(self.flavour)
        if path is None or self._http is None or not self.breaker.state == "closed":
            return flavours.estimate_tokens(text)
        try:
            body = flavours.tokenize_body(self.flavour, text, self.model)
            response = await self._http.post(path, json=body)
            count = flavours.token_count(response.json()) if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError) as err:
            log.debug("backend %s: tokenize failed: %s", self.name, self._one_line(err))
            count = None
        return count if count is not None else flavours.estimate_tokens(text)

    def snapshot(self) -> MeterSnapshot:
        """Requests in flight and waiting (ours), the server's slots and load where it shows
        them (the poller's last reading, so this stays cheap), speeds measured from real
        responses; state 'breaker_open' while the breaker holds requests back."""
        running = list(self._running.values())
        by_agent = {r.agent: r for r in running}
        fresh = time.monotonic() - self._polled_at < STALE_S
        server_slots = self._server_slots if fresh else []
        load = self._load if fresh else flavours.ServerLoad()
        if server_slots:
            agent_of = {slot: agent for agent, slot in self._pins.items()}
            slots = []
            for s in server_slots:
                agent = agent_of.get(s.index)
                ours = by_agent.get(agent) if agent is not None else None
                slots.append(SlotInfo(index=s.index, agent=agent, state="generating" if s.busy else "idle",
                                      tokens_generated=s.tokens_generated,
                                      tokens_per_s=ours.rate() if ours is not None and s.busy else 0.0,
                                      cached_tokens=0, backend=self.name))
        else:
            slots = []
            for i in range(self.settings.max_concurrent):
                r = running[i] if i < len(running) else None
                if r is None:
                    slots.append(SlotInfo(index=i, agent=None, state="idle", tokens_generated=0,
                                          tokens_per_s=0.0, cached_tokens=0, backend=self.name))
                else:
                    slots.append(SlotInfo(index=i, agent=r.agent,
                                          state="generating" if r.first_token_at is not None else "prefill",
                                          tokens_generated=r.tokens, tokens_per_s=r.rate(), cached_tokens=0,
                                          backend=self.name))
        waiting: dict[int, int] = {}
        for r in self._queue:
            waiting[r.priority] = waiting.get(r.priority, 0) + 1
        state, detail = self._meter_state()
        breaker = self.breaker.state
        host = urlsplit(self.url).netloc or self.url
        device = f"{self.flavour} at {host}" + ("" if breaker == "closed" else f" (breaker {breaker})")
        tokens_per_s = sum(r.rate() for r in running)
        if load.running is not None:
            busy = load.running  # the server's count: other clients' requests load it too
        elif server_slots:
            busy = sum(1 for s in server_slots if s.busy)
        else:
            busy = len(running)
        summary = BackendMeter(name=self.name, kind=self.flavour, state=state, detail=detail,
                               model=self.model, running=busy, waiting=len(self._queue) + (load.waiting or 0),
                               kv_usage=load.kv_usage, tokens_per_s=tokens_per_s)
        # No KV cells here: a server's KV usage is a fraction, in the summary.
        return MeterSnapshot(ts=time.time(), state=state, device=device, model=self.model, slots=slots,
                             waiting=waiting, kv_used=0, kv_total=0, tokens_per_s=tokens_per_s, gpu=None,
                             speed=self._speed, kind=self.flavour, detail=detail, backends=[summary])

    def _meter_state(self) -> tuple[MeterState, str]:
        """The meter's state and why: a breaker that is not closed shows as 'breaker_open'
        (half-open too: the last word from the server was a failure) until a request succeeds."""
        state: MeterState = self._state  # type: ignore[assignment]
        breaker = self.breaker.state
        if state != "ready" or breaker == "closed":
            return state, ""
        if breaker == "open":
            when = f"next try in {self.breaker.retry_in_s():.0f} s"
        else:
            when = "the next request is a trial"
        why = f"circuit breaker {breaker} ({when}): {self.breaker.last_error}"
        return "breaker_open", self._one_line(why)

    # -- probe (doctor) --

    async def probe(self) -> BackendProbe:
        """Is it there, which flavour, does it list our model, can it constrain output, how
        many slots; each call within connect_timeout_s. The breaker's state is reported."""
        if self._client is None or self._http is None:
            return self._probe_result(False, [], None, "backend not started")
        try:
            models = await asyncio.wait_for(self._client.models.list(), self.settings.connect_timeout_s)
            entries = list(models.data)
        except openai.APIStatusError as err:  # it answered: up, but refusing (a bad key, say)
            self._refused = err.status_code in (401, 403)
            return self._probe_result(True, [], None, f"{self.url} refused: HTTP {err.status_code}: "
                                      f"{self._describe(err)}")
        except (openai.OpenAIError, TimeoutError) as err:
            return self._probe_result(False, [], None, f"{self.url} unreachable: {self._describe(err)}")
        self._refused = False
        ids = [m.id for m in entries]
        owners = [str(getattr(m, "owned_by", "") or "") for m in entries]
        found = flavours.Probes(models_owned_by=owners)
        if self.settings.flavour == "auto" or self.flavour in ("llama-server", "vllm", "sglang"):
            found.props, found.version, found.server_info, found.ollama_version = await asyncio.gather(
                self._get_json("/props"), self._get_json("/version"),
                self._get_json("/get_server_info"), self._get_json("/api/version"))
        if self.settings.flavour == "auto":
            self.flavour = flavours.detect(found)
        self._total_slots = flavours.slot_count(found)
        problem = ""
        listed = not self.model or self.model in ids
        if not listed:
            shown = ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")
            problem = f"model {self.model!r} is not served at {self.url} (it lists: {shown or 'nothing'})"
        elif self.breaker.state != "closed":
            problem = f"circuit breaker {self.breaker.state}: {self.breaker.last_error}"
        return self._probe_result(True, ids, listed, problem)

    def _probe_result(self, reachable: bool, models: list[str], listed: bool | None,
                      problem: str) -> BackendProbe:
        if not problem and self.breaker.state != "closed":
            problem = f"circuit breaker {self.breaker.state}: {self.breaker.last_error}"
        return BackendProbe(name=self.name, url=self.url, reachable=reachable, flavour=self.flavour,
                            models=models, model_listed=bool(listed),
                            structured_output=reachable and flavours.structured_output(self.flavour),
                            slots=self._total_slots, breaker_open=self.breaker.state == "open",
                            problem=self._one_line(problem))

    async def _get_json(self, path: str) -> dict[str, Any] | None:
        assert self._http is not None
        try:
            response = await self._http.get(path)
            body = response.json() if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    # -- the queue --

    def _pump(self) -> None:
        """Start queued requests while fewer than max_concurrent are in flight."""
        loop = asyncio.get_running_loop()
        while self._queue and len(self._running) < self.settings.max_concurrent:
            request = heapq.heappop(self._queue)
            if request.gen.done():
                continue
            request.admitted = time.monotonic()
            request.admission = next(self._admissions)
            self._running[request.order] = request
            request.task = loop.create_task(self._serve(request))

    def _cancel(self, request: _Request) -> None:
        if request.task is not None:
            request.task.cancel()
        elif request in self._queue:
            self._queue.remove(request)
            heapq.heapify(self._queue)
            self._finish(request, "", "cancelled", None)

    async def _serve(self, request: _Request) -> None:
        pieces: list[str] = []
        reason: FinishReason = "error"
        error: str | None = None
        usage: flavours.UsageCounts | None = None
        trial = False
        try:
            if not self.breaker.allow():
                error = (f"backend {self.name}: circuit breaker open ({self.breaker.last_error}); "
                         f"next try in {self.breaker.retry_in_s():.0f} s")
                return
            trial = True
            left = request.deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    reason, usage = await self._attempts(request, pieces)
                self.breaker.succeeded()
            except TimeoutError:
                reason = "timeout"
                error = f"backend {self.name}: no answer by the request's deadline"
                if request.first_token_at is None:  # not a byte: the server is not answering
                    self.breaker.failed(f"{self.url} did not answer in time")
                else:
                    self.breaker.succeeded()
            except _Failure as failure:
                reason, error = "error", f"backend {self.name}: {failure}"
                if failure.server:
                    self.breaker.failed(self._one_line(failure))
                else:
                    self.breaker.succeeded()
            except Exception as err:  # anything unforeseen: a reason, and a breaker not left half-open
                reason, error = "error", f"backend {self.name}: {self._describe(err)}"
                log.warning("%s (unexpected)", error)  # one line, the key masked: no traceback
                self.breaker.failed(self._one_line(error))
        except asyncio.CancelledError:
            reason, error = "cancelled", None
            if trial:
                self.breaker.released()
        finally:
            self._running.pop(request.order, None)
            self._finish(request, "".join(pieces), reason, error, usage)
            if self._state == "ready":
                self._pump()

    async def _attempts(self, request: _Request, pieces: list[str]) -> _Outcome:
        """Stream the request, retrying refused or failed attempts with backoff until the
        first piece arrived (then a retry would repeat text)."""
        attempt = 0
        while True:
            try:
                return await self._stream(request, pieces)
            except _Failure as failure:
                if failure.free:
                    continue
                if not failure.retry or pieces or attempt >= self.settings.retries:
                    raise
                delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** attempt)
                attempt += 1
                log.info("backend %s: %s; retry %d in %.1f s", self.name, self._one_line(failure),
                         attempt, delay)
                await asyncio.sleep(delay)

    async def _stream(self, request: _Request, pieces: list[str]) -> _Outcome:
        assert self._client is not None
        s = request.sampling
        extra = flavours.request_params(self.flavour, schema=request.schema, priority=request.priority,
                                        slot=self._pin(request.agent), send_priority=self._send_priority)
        extra |= flavours.sampling_params(self.flavour, top_k=s.top_k, min_p=s.min_p,
                                          repeat_penalty=s.repeat_penalty)
        response_format = extra.pop("response_format", openai.NOT_GIVEN)
        sent_at = time.monotonic()
        try:
            stream = await self._client.chat.completions.create(
                model=self.model or "default", messages=request.messages,  # type: ignore[arg-type]
                max_tokens=request.max_tokens, temperature=s.temperature, top_p=s.top_p,
                stop=request.stop or openai.NOT_GIVEN, stream=True,
                stream_options={"include_usage": True}, response_format=response_format,
                extra_body=extra)
        except openai.BadRequestError as err:
            if self._send_priority and "priority" in str(err).lower() and "priority" in extra:
                self._send_priority = False  # vLLM without --scheduling-policy priority
                raise _Failure("server refused priority", retry=True, server=False, free=True) from None
            raise self._failure(err) from None
        except openai.OpenAIError as err:
            raise self._failure(err) from None
        reason: FinishReason | None = None
        usage: flavours.UsageCounts | None = None
        chunks = aiter(stream)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks), self.settings.stall_timeout_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise _Failure(f"stream stalled: nothing for {self.settings.stall_timeout_s:g} s",
                                   retry=True, server=True) from None
                except openai.OpenAIError as err:
                    raise self._failure(err) from None
                except httpx2.HTTPError as err:  # connection lost
                    raise _Failure(f"stream broke: {self._describe(err)}", retry=True, server=True) from None
                except ValueError as err:  # not JSON
                    raise self._malformed(err) from None
                try:  # the client passes JSON of any other shape through as it came
                    parts = [(choice.delta.content, choice.finish_reason) for choice in chunk.choices]
                    if not all(content is None or isinstance(content, str) for content, _ in parts):
                        raise TypeError("content is not text")
                except (AttributeError, TypeError) as err:
                    raise self._malformed(err) from None
                finished = None
                for content, finish in parts:
                    if content:
                        if request.first_token_at is None:
                            request.first_token_at = time.monotonic()
                        pieces.append(content)
                        request.tokens += 1
                        deliver([(request.gen, content, None)])
                    finished = finish or finished
                if finished is not None:
                    reason = "length" if finished == "length" else "stop"
                if chunk.usage is not None or finished is not None or not chunk.choices:
                    usage = flavours.usage_counts(chunk.model_dump()) or usage
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
        if reason is None:  # cut off: llama-cpp-python ends a stream so when a newer request interrupts it
            raise _Failure("the stream ended before the server said it finished", retry=True, server=False)
        reported = usage is not None
        if usage is None:  # the server reports none (llama-cpp-python): pieces and an estimate
            prompt = flavours.estimate_tokens("".join(m.get("content", "") for m in request.messages))
            usage = flavours.UsageCounts(prompt_tokens=prompt, completion_tokens=request.tokens,
                                         cached_prompt_tokens=0)
        self._observe(request, sent_at, usage, reported=reported)
        return reason, usage

    def _pin(self, agent: str) -> int | None:
        """llama-server: the slot this agent keeps (its prompt prefix stays cached there)."""
        if self.flavour != "llama-server" or not agent:
            return None
        if agent not in self._pins:
            slots = self._total_slots or self.settings.max_concurrent
            self._pins[agent] = len(self._pins) % slots
        return self._pins[agent]

    def _observe(self, request: _Request, sent_at: float, usage: flavours.UsageCounts, *,
                 reported: bool) -> None:
        """Speeds measured from a finished response: prefill from the time to the first
        token, generation from the pieces after it. Without reported usage the server may
        have reused a cached prefix it does not tell of (llama-cpp-python: a repeated
        132-token prompt "ran" at 2,600 tok/s), so prefill speed then only ever drops:
        a slow guess lengthens a deadline, a fast one times calls out."""
        if request.first_token_at is None:
            return
        now = time.monotonic()
        evaluated = usage.prompt_tokens - usage.cached_prompt_tokens
        ttft = max(1e-3, request.first_token_at - sent_at)
        prompt_tps = evaluated / ttft if evaluated >= MIN_PROMPT_SAMPLE else None
        gen_tps = (request.tokens - 1) / (now - request.first_token_at) if request.tokens >= 4 else None
        old = self._speed
        if old is None:
            if prompt_tps is None or gen_tps is None:
                return  # need both for a first Speed
            self._speed = Speed(prompt_tps=prompt_tps, gen_tps=gen_tps, measured_at=time.time())
            return
        if prompt_tps and not reported:
            prompt_tps = min(prompt_tps, old.prompt_tps)
        p = old.prompt_tps + SPEED_WEIGHT * (prompt_tps - old.prompt_tps) if prompt_tps else old.prompt_tps
        g = old.gen_tps + SPEED_WEIGHT * (gen_tps - old.gen_tps) if gen_tps else old.gen_tps
        self._speed = Speed(prompt_tps=p, gen_tps=g, measured_at=time.time())

    def _finish(self, request: _Request, text: str, reason: FinishReason, error: str | None,
                counts: flavours.UsageCounts | None = None) -> None:
        now = time.monotonic()
        admitted = request.admitted if request.admitted is not None else now
        usage = Usage(prompt_tokens=counts.prompt_tokens if counts else 0,
                      cached_prompt_tokens=counts.cached_prompt_tokens if counts else 0,
                      completion_tokens=counts.completion_tokens if counts else request.tokens,
                      queue_wait_s=admitted - request.submitted, decode_s=now - admitted,
                      ttft_s=request.first_token_at - request.submitted if request.first_token_at else None)
        result = Result(text=text, finish_reason=reason, usage=usage, agent=request.agent,
                        admission=request.admission,
                        error=self._one_line(error) if error else None)
        deliver([(request.gen, "", result)])

    # -- errors --

    def _failure(self, err: openai.OpenAIError) -> _Failure:
        """Which failures may be retried and which count against the server."""
        text = self._describe(err)
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            transient = status == 429 or status >= 500
            return _Failure(f"HTTP {status}: {text}", retry=transient, server=transient)
        if isinstance(err, openai.APITimeoutError | openai.APIConnectionError):
            return _Failure(text, retry=True, server=True)
        return _Failure(text, retry=False, server=False)

    def _malformed(self, err: Exception) -> _Failure:
        """A chunk that is not JSON or not a chat completion chunk: the server's fault."""
        return _Failure(f"malformed chunk: {self._describe(err)}", retry=True, server=True)

    def _describe(self, err: BaseException) -> str:
        if isinstance(err, openai.APIStatusError):
            body = err.body
            if isinstance(body, dict):
                inner = body.get("error", body)
                message = inner.get("message") if isinstance(inner, dict) else inner
                if message is None and isinstance(body.get("detail"), str):
                    message = body["detail"]
                if message:
                    return self._one_line(str(message))
            return self._one_line(err.message)
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__
            detail = f" ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else ""
            return self._one_line(f"cannot reach {self.url}{detail}")
        return self._one_line(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)

    def _one_line(self, message: object) -> str:
        """The first line, the API key masked, bounded."""
        text = str(message).strip()
        if self._key:
            text = text.replace(self._key, "***")
        line = text.splitlines()[0] if text else ""
        return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"

    # -- the meter poll --

    async def _poll_meter(self) -> None:
        """The flavour's meter paths (llama-server /slots and /metrics, vLLM and SGLang
        /metrics) every METER_POLL_S: async I/O bounded by the connect timeout, so neither
        the loop nor snapshot() waits on it. A path the server does not serve (404, or 501:
        llama-server without --metrics) is not asked again; a failed poll keeps the last
        reading until it is stale."""
        assert self._http is not None
        dropped: set[str] = set()
        while True:
            paths = [p for p in flavours.meter_paths(self.flavour) if p not in dropped]
            if paths and self.breaker.state == "closed":
                for path in paths:
                    if await self._poll_once(path) is False:
                        dropped.add(path)
            await asyncio.sleep(METER_POLL_S)

    async def _poll_once(self, path: str) -> bool | None:
        """One meter reading; False: the server does not serve `path`; None: it failed now."""
        assert self._http is not None
        try:
            response = await asyncio.wait_for(self._http.get(path), self.settings.connect_timeout_s)
            if response.status_code in (404, 501):
                return False
            if response.status_code != 200:
                return None
            if path == "/slots":
                self._server_slots = flavours.parse_slots(response.json())
            else:
                self._load = flavours.parse_metrics(response.text)
        except (httpx2.HTTPError, ValueError, TimeoutError) as err:
            log.debug("backend %s: meter poll of %s failed: %s", self.name, path, self._one_line(err))
            return None
        self._polled_at = time.monotonic()
        return True

    async def _close_clients(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()


__all__ = ["BackendProbe", "OpenAIBackend", "resolve_api_key"]
