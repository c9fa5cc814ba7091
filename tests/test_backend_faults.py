"""The faults a model server gives, injected by a real OpenAI-compatible HTTP server that
the test starts on a loopback port (starlette under uvicorn, in a thread), met through the
real `OpenAIBackend`: 429 then success, 503 every time (bounded retries, then the breaker
opens and the meter says so, while another backend on the same server carries on), a
malformed chunk mid-stream, a context overflow (llama-server's and vLLM's words; not
retried, not the server's fault), a stream that stalls. Each ends in a Result with one
line naming the cause, by its deadline, and the API key (which the server echoes back in
its error bodies) is in none of them, nor in a log line.

What a request does is chosen by the model it names (see `FaultServer`)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agents.config import InferenceConfig
from agents.config.schema import BackendConfig
from agents.inference.openai_backend import OpenAIBackend
from agents.inference.types import Result

SECRET = "sk-agentdeck-fault-0123456789abcdef"
KEY_VAR = "AGENTDECK_TEST_FAULT_KEY"
GOOD, FLAKY, DOWN, MALFORMED, SHAPELESS, STALL = "good", "flaky-429", "down-503", "malformed", "shapeless", "stall"
OVERFLOW_LLAMA, OVERFLOW_VLLM = "overflow-llama-server", "overflow-vllm"
MODELS = [GOOD, FLAKY, DOWN, MALFORMED, SHAPELESS, STALL, OVERFLOW_LLAMA, OVERFLOW_VLLM]
REFUSALS_BEFORE_SUCCESS = 2  # FLAKY answers 429 this many times, then streams
STALL_S = 0.5  # the stall timeout of the backend that meets STALL
HOLD_S = 30.0  # how long STALL holds its stream open (the client leaves long before)
# llama-server (b5xxx) and vLLM's own words for a prompt past the context.
LLAMA_OVERFLOW = {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                            "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 4113,
                            "n_ctx": 2048}}
VLLM_OVERFLOW = {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, "
                 "you requested 4113 tokens (4097 in the messages, 16 in the completion). Please reduce the "
                 "length of the messages or completion.", "type": "BadRequestError", "param": None, "code": 400}


def _chunk(model: str, content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"role": "assistant", "content": content}
    body = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def _usage_chunk(model: str) -> str:
    body = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    return f"data: {json.dumps(body)}\n\n"


class FaultServer:
    """An OpenAI-compatible server whose chat answer is the fault its model names. It
    counts each model's chat requests, insists on the key (so the key provably travels),
    and echoes the key in its 503 body as a careless proxy might."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/models", self._models, methods=["GET"]),
                                Route("/v1/chat/completions", self._chat, methods=["POST"])])
        # Bound and listening before the thread starts: a client may connect at once.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", loop="asyncio",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="fault-server", daemon=True)

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
        assert not self._thread.is_alive(), "the fault server did not stop"

    def hit_count(self, model: str) -> int:
        with self._lock:
            return self.hits[model]

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                         "owned_by": "fault-server"} for m in MODELS]})

    async def _chat(self, request: Request) -> Response:
        key = request.headers.get("authorization", "")
        if key != f"Bearer {SECRET}":
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, status_code=401)
        body = await request.json()
        model = str(body.get("model"))
        with self._lock:
            self.hits[model] += 1
            hit = self.hits[model]
        if model == FLAKY and hit <= REFUSALS_BEFORE_SUCCESS:
            return JSONResponse({"error": {"message": "too many requests", "type": "rate_limit"}},
                                status_code=429)
        if model == DOWN:
            return JSONResponse({"error": {"message": f"upstream unavailable (caller {key})",
                                           "type": "server_error"}}, status_code=503)
        if model == OVERFLOW_LLAMA:
            return JSONResponse(LLAMA_OVERFLOW, status_code=400)
        if model == OVERFLOW_VLLM:
            return JSONResponse(VLLM_OVERFLOW, status_code=400)
        return StreamingResponse(self._stream(model), media_type="text/event-stream")

    async def _stream(self, model: str) -> AsyncIterator[str]:
        yield _chunk(model, "Hel")
        if model == MALFORMED:
            yield f"data: {{not json {SECRET}\n\n"
        elif model == SHAPELESS:  # valid JSON, not a chunk
            yield "data: [1, 2, 3]\n\n"
        elif model == STALL:
            await asyncio.sleep(HOLD_S)  # cancelled when the client hangs up
        yield _chunk(model, "lo")
        yield _chunk(model, finish="stop")
        yield _usage_chunk(model)
        yield "data: [DONE]\n\n"


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


MakeBackend = Callable[..., Awaitable[OpenAIBackend]]


@pytest.fixture
async def make_backend(fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeBackend]:
    """Started backends on the fault server, keyed from the environment; stopped after."""
    monkeypatch.setenv(KEY_VAR, SECRET)
    made: list[OpenAIBackend] = []

    async def make(model: str, **overrides: Any) -> OpenAIBackend:
        fields: dict[str, Any] = dict(url=fault_server.url, model=model, api_key=f"env:{KEY_VAR}",
                                      connect_timeout_s=2.0, stall_timeout_s=5.0, retries=2,
                                      breaker_failures=3, breaker_open_s=600.0)
        backend = OpenAIBackend(f"at-{model}", BackendConfig(**(fields | overrides)), inference=InferenceConfig())
        await backend.start()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def ask() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Say hello."}]


async def timed(backend: OpenAIBackend, timeout_s: float = 20.0) -> tuple[Result, float]:
    started = time.monotonic()
    result = await backend.submit(ask(), agent="dev", max_tokens=16, timeout_s=timeout_s)
    return result, time.monotonic() - started


def one_clean_line(result: Result, backend: OpenAIBackend, logs: pytest.LogCaptureFixture) -> str:
    """The Result's error: one line, naming the backend, no traceback, no key anywhere."""
    error = result.error or ""
    assert error.startswith(f"backend {backend.name}: "), result
    assert "\n" not in error and "Traceback" not in error
    assert SECRET not in error
    for record in logs.records:
        assert SECRET not in record.getMessage()
        assert record.exc_info is None, record.getMessage()  # nothing went up as a traceback
    return error


@pytest.mark.timeout(30)
async def test_the_fault_server_streams_a_good_answer(make_backend: MakeBackend, fault_server: FaultServer) -> None:
    backend = await make_backend(GOOD)
    gen = backend.submit(ask(), agent="dev", max_tokens=16, timeout_s=20)
    pieces = [piece async for piece in gen]
    result = await gen
    assert result.finish_reason == "stop" and result.error is None
    assert result.text == "".join(pieces) == "Hello"
    assert result.usage.prompt_tokens == 9 and result.usage.completion_tokens == 2
    assert fault_server.hit_count(GOOD) == 1


@pytest.mark.timeout(30)
async def test_429_twice_then_success_after_bounded_retries(make_backend: MakeBackend, fault_server: FaultServer,
                                                            logs: pytest.LogCaptureFixture) -> None:
    backend = await make_backend(FLAKY, retries=2)
    result, took = await timed(backend)
    assert result.finish_reason == "stop" and result.text == "Hello", result
    assert fault_server.hit_count(FLAKY) == REFUSALS_BEFORE_SUCCESS + 1
    assert took >= 0.5 + 1.0  # it backed off: 0.5 s, then 1 s
    assert backend.breaker.state == "closed" and backend.snapshot().state == "ready"
    retried = [r.getMessage() for r in logs.records if r.name == "agents.inference.openai" and "retry" in r.getMessage()]
    assert len(retried) == 2 and all("HTTP 429" in line for line in retried)
    assert all(SECRET not in r.getMessage() for r in logs.records)


@pytest.mark.timeout(40)
async def test_503_every_time_retries_then_opens_the_breaker(make_backend: MakeBackend, fault_server: FaultServer,
                                                             logs: pytest.LogCaptureFixture) -> None:
    backend = await make_backend(DOWN, retries=2, breaker_failures=2)
    first, took = await timed(backend)
    assert first.finish_reason == "error", first
    error = one_clean_line(first, backend, logs)
    assert "HTTP 503" in error and "upstream unavailable" in error and "***" in error  # the echoed key, masked
    assert fault_server.hit_count(DOWN) == 1 + 2  # the first try and two retries, no more
    assert took < 20.0
    assert backend.breaker.state == "closed"  # one failed request is not yet a dead server

    second, _ = await timed(backend)
    assert second.finish_reason == "error" and "HTTP 503" in one_clean_line(second, backend, logs)
    assert fault_server.hit_count(DOWN) == 2 * 3
    assert backend.breaker.state == "open"

    started = time.monotonic()
    refused, _ = await timed(backend)
    assert refused.finish_reason == "error"
    assert "circuit breaker open" in one_clean_line(refused, backend, logs) and "HTTP 503" in (refused.error or "")
    assert time.monotonic() - started < 1.0  # failed at once
    assert fault_server.hit_count(DOWN) == 2 * 3  # the breaker stopped the hammering

    snap = backend.snapshot()
    assert snap.state == "breaker_open" and "breaker open" in snap.device
    assert [m.state for m in snap.backends] == ["breaker_open"] and "HTTP 503" in snap.detail
    assert SECRET not in snap.detail
    probe = await backend.probe()
    assert probe.breaker_open and probe.reachable and "HTTP 503" in probe.problem and SECRET not in probe.problem

    # Another backend on the same server has its own breaker: its agent carries on.
    other = await make_backend(GOOD)
    result, _ = await timed(other)
    assert result.finish_reason == "stop" and result.text == "Hello", result


@pytest.mark.timeout(30)
async def test_a_malformed_chunk_mid_stream_is_a_one_line_error(make_backend: MakeBackend,
                                                                fault_server: FaultServer,
                                                                logs: pytest.LogCaptureFixture) -> None:
    backend = await make_backend(MALFORMED, retries=2)
    result, took = await timed(backend, timeout_s=10)
    assert result.finish_reason == "error", result
    error = one_clean_line(result, backend, logs)
    assert "malformed chunk" in error and "JSONDecodeError" in error, error
    assert result.text == "Hel"  # what streamed before it stays the result's text
    assert fault_server.hit_count(MALFORMED) == 1  # text had streamed: a retry would repeat it
    assert took < 10.0


@pytest.mark.timeout(30)
async def test_a_chunk_of_the_wrong_shape_is_a_one_line_error(make_backend: MakeBackend,
                                                              fault_server: FaultServer,
                                                              logs: pytest.LogCaptureFixture) -> None:
    backend = await make_backend(SHAPELESS, retries=2)
    result, took = await timed(backend, timeout_s=10)
    assert result.finish_reason == "error", result
    error = one_clean_line(result, backend, logs)
    assert "malformed chunk" in error and "'list' object has no attribute 'choices'" in error, error
    assert result.text == "Hel" and fault_server.hit_count(SHAPELESS) == 1
    assert took < 10.0
    # The backend is still whole: the next request is served (and fails the same way).
    again, _ = await timed(backend, timeout_s=10)
    assert again.finish_reason == "error" and "malformed" in (again.error or "")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("model", "words"), [(OVERFLOW_LLAMA, "exceeds the available context size"),
                                              (OVERFLOW_VLLM, "maximum context length is 2048 tokens")])
async def test_a_context_overflow_is_named_and_not_retried(make_backend: MakeBackend, fault_server: FaultServer,
                                                           logs: pytest.LogCaptureFixture, model: str,
                                                           words: str) -> None:
    backend = await make_backend(model, retries=2, breaker_failures=1)
    result, took = await timed(backend)
    assert result.finish_reason == "error", result
    error = one_clean_line(result, backend, logs)
    assert "HTTP 400" in error and words in error, error
    assert fault_server.hit_count(model) == 1  # the same prompt would overflow again
    assert took < 1.0 + 0.5  # no backoff
    # Our prompt's fault, not the server's: even a one-failure breaker stays closed.
    assert backend.breaker.state == "closed" and backend.snapshot().state == "ready"


@pytest.mark.timeout(30)
async def test_a_stalled_stream_fails_naming_the_stall(make_backend: MakeBackend, fault_server: FaultServer,
                                                       logs: pytest.LogCaptureFixture) -> None:
    backend = await make_backend(STALL, stall_timeout_s=STALL_S, retries=2)
    result, took = await timed(backend, timeout_s=10)
    assert result.finish_reason == "error", result
    error = one_clean_line(result, backend, logs)
    assert "stalled" in error and f"{STALL_S:g} s" in error, error
    assert result.text == "Hel"
    assert fault_server.hit_count(STALL) == 1  # a first piece had come: not retried
    assert STALL_S <= took < STALL_S + 3.0  # well before the 10 s deadline


@pytest.mark.timeout(30)
async def test_an_unforeseen_exception_is_a_reason_and_counts_against_the_server(
        make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture) -> None:
    """Whatever goes wrong inside a request, the task is told why in one line, and the
    breaker hears of it (a half-open breaker left waiting would refuse every later call)."""
    backend = await make_backend(GOOD, breaker_failures=1)

    async def broken(*_args: object) -> None:
        raise RuntimeError(f"something unforeseen with {SECRET}")

    monkeypatch.setattr(backend, "_stream", broken)
    result, _ = await timed(backend)
    error = one_clean_line(result, backend, logs)
    assert result.finish_reason == "error" and "RuntimeError: something unforeseen with ***" in error
    assert backend.breaker.state == "open" and backend.snapshot().state == "breaker_open"
