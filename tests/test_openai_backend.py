"""OpenAIBackend against a real OpenAI-compatible server (llama-cpp-python's, started on a
loopback port by the fixture), plus the faults a model server gives: killed mid-stream, a
socket that never answers (the breaker opens), a model it lacks, a key it refuses."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import jsonschema
import pytest

from agents.config import InferenceConfig
from agents.config.schema import BackendConfig
from agents.errors import ConfigError, ModelError
from agents.inference.backend import Backend
from agents.inference.openai_backend import OpenAIBackend
from tests.openai_server import ALIAS, LlamaCppServer, start_or_skip

SECRET = "sk-agentdeck-test-0123456789abcdef"
KEY_VAR = "AGENTDECK_TEST_BACKEND_KEY"
ANSWER = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                                           "confidence": {"type": "integer"}},
          "required": ["answer", "confidence"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    srv = start_or_skip()
    yield srv
    srv.stop()


def settings(url: str, **overrides: object) -> BackendConfig:
    return BackendConfig(url=url, model=overrides.pop("model", ALIAS), **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def backend(server: LlamaCppServer) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend("local", settings(server.url), inference=InferenceConfig())
    await b.start()
    yield b
    await b.stop()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.timeout(180)
async def test_stream_equals_result_and_usage_counted(backend: OpenAIBackend) -> None:
    gen = backend.submit(ask("Name three colours."), agent="dev", max_tokens=24, timeout_s=120)
    pieces = [piece async for piece in gen]
    result = await gen
    assert result.finish_reason in ("stop", "length"), result.error
    assert result.text and "".join(pieces) == result.text
    assert result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0
    assert result.usage.ttft_s is not None and result.agent == "dev"


@pytest.mark.timeout(180)
async def test_schema_constrained_output_validates(backend: OpenAIBackend) -> None:
    result = await backend.submit(ask("Is the sky blue? Answer in JSON."), agent="triage", schema=ANSWER,
                                  max_tokens=64, timeout_s=120)
    assert result.finish_reason == "stop", result
    jsonschema.validate(json.loads(result.text), ANSWER)


@pytest.mark.timeout(240)
async def test_two_concurrent_requests_both_finish(backend: OpenAIBackend) -> None:
    gens = [backend.submit(ask(f"Count to {n}."), agent=agent, max_tokens=12, timeout_s=180)
            for n, agent in ((3, "lead"), (4, "dev"))]
    results = await asyncio.gather(*gens)
    assert [r.finish_reason in ("stop", "length") for r in results] == [True, True], results
    assert {r.agent for r in results} == {"lead", "dev"}
    assert all(r.text for r in results)


@pytest.mark.timeout(60)
async def test_probe_reports_the_server(backend: OpenAIBackend) -> None:
    probe = await backend.probe()
    assert probe.reachable and probe.model_listed and probe.structured_output
    assert probe.flavour == "llama-cpp-python" and ALIAS in probe.models
    assert probe.problem == "" and not probe.breaker_open
    assert await backend.count_tokens("Hello world, how are you?") == 7  # the server's tokenizer
    assert backend.snapshot().state == "ready"


@pytest.mark.timeout(60)
async def test_a_model_the_server_lacks_is_a_one_line_error(server: LlamaCppServer) -> None:
    b = OpenAIBackend("local", settings(server.url, model="no-such-model"), inference=InferenceConfig())
    with pytest.raises(ModelError) as caught:
        await b.start()
    message = str(caught.value)
    assert "no-such-model" in message and ALIAS in message and "\n" not in message


@pytest.mark.timeout(240)
async def test_server_killed_mid_stream_ends_in_error_within_the_deadline() -> None:
    srv = start_or_skip()
    try:
        b = OpenAIBackend("doomed", settings(srv.url, retries=2), inference=InferenceConfig())
        await b.start()
        started = time.monotonic()
        gen = b.submit(ask("Write a long story about a lighthouse."), agent="dev", max_tokens=400, timeout_s=120)
        stream = aiter(gen)
        await anext(stream)  # a first piece: it is streaming
        srv.kill()
        result = await gen
        assert result.finish_reason == "error", result
        assert result.error and "doomed" in result.error and "\n" not in result.error
        assert time.monotonic() - started < 120
        await b.stop()
    finally:
        srv.stop()


class SilentServer:
    """A loopback socket that accepts and reads, and never answers."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            while await reader.read(4096):
                pass

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()


@pytest.mark.timeout(60)
async def test_a_silent_server_times_out_and_opens_the_breaker(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)
    caplog.set_level(logging.DEBUG)
    async with SilentServer() as url:
        b = OpenAIBackend("silent", settings(url, api_key=f"env:{KEY_VAR}", connect_timeout_s=0.5, retries=0,
                                             breaker_failures=2, breaker_open_s=600),
                          inference=InferenceConfig())
        await b.start()  # unreachable at start is not fatal: its requests say why
        errors = []
        for _ in range(2):
            started = time.monotonic()
            result = await b.submit(ask("hello"), agent="dev", max_tokens=8, timeout_s=1.5)
            assert result.finish_reason == "timeout", result
            assert time.monotonic() - started < 1.5 + 1.0  # within the deadline, plus scheduling
            errors.append(result.error)
        assert b.breaker.state == "open"
        started = time.monotonic()
        refused = await b.submit(ask("hello"), agent="dev", max_tokens=8, timeout_s=30)
        assert refused.finish_reason == "error" and "circuit breaker open" in (refused.error or "")
        assert time.monotonic() - started < 1.0  # the breaker fails it at once
        errors.append(refused.error)
        probe = await b.probe()
        assert probe.breaker_open and not probe.reachable and probe.problem
        snap = b.snapshot()
        assert snap.state == "breaker_open" and "breaker open" in snap.device
        assert [m.state for m in snap.backends] == ["breaker_open"] and "did not answer" in snap.detail
        await b.stop()
    for line in [*errors, probe.problem, *(r.getMessage() for r in caplog.records)]:
        assert SECRET not in (line or "")


@pytest.mark.timeout(120)
async def test_a_refused_key_is_a_config_error_without_the_key(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)
    caplog.set_level(logging.DEBUG)
    srv = start_or_skip(extra_args=["--api_key", "the-right-key"])
    try:
        b = OpenAIBackend("keyed", settings(srv.url, api_key=f"env:{KEY_VAR}"), inference=InferenceConfig())
        with pytest.raises(ConfigError) as caught:
            await b.start()
        message = str(caught.value)
        assert "backends.keyed.api_key" in message and "401" in message and "\n" not in message
        assert SECRET not in message
        assert all(SECRET not in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()


def test_error_lines_mask_the_key() -> None:
    b = OpenAIBackend("x", settings("http://127.0.0.1:9/v1"), inference=InferenceConfig())
    b._key = SECRET
    line = b._one_line(f"server said: bad key {SECRET}\nTraceback ...")
    assert SECRET not in line and "***" in line and "\n" not in line


@pytest.mark.timeout(30)
async def test_an_unstarted_backend_answers_with_an_error() -> None:
    b = OpenAIBackend("x", settings("http://127.0.0.1:9/v1"), inference=InferenceConfig())
    assert isinstance(b, Backend) and b.config is None
    result = await b.submit(ask("hi"), max_tokens=4, timeout_s=5)
    assert result.finish_reason == "error" and "not running" in (result.error or "")


@pytest.mark.timeout(30)
async def test_an_unset_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    b = OpenAIBackend("x", settings("http://127.0.0.1:9/v1", api_key=f"env:{KEY_VAR}"), inference=InferenceConfig())
    with pytest.raises(ConfigError, match=KEY_VAR):
        await b.start()


@pytest.mark.timeout(180)
async def test_cancel_mid_stream_then_the_next_request_works(backend: OpenAIBackend) -> None:
    gen = backend.submit(ask("Write a long story about a ship."), agent="dev", max_tokens=300, timeout_s=120)
    stream = aiter(gen)
    await anext(stream)
    gen.cancel()
    result = await gen
    assert result.finish_reason == "cancelled" and result.error is None
    assert backend.snapshot().slots[0].agent is None  # nothing left in flight
    after = await backend.submit(ask("Say yes."), agent="dev", max_tokens=4, timeout_s=120)
    assert after.finish_reason in ("stop", "length"), after


@pytest.mark.timeout(240)
async def test_the_client_queue_runs_higher_priority_first(server: LlamaCppServer) -> None:
    b = OpenAIBackend("one", settings(server.url, max_concurrent=1), inference=InferenceConfig())
    await b.start()
    try:
        first = b.submit(ask("Say one."), agent="a", max_tokens=4, timeout_s=120)
        low = b.submit(ask("Say two."), agent="low", priority=1, max_tokens=4, timeout_s=120)
        high = b.submit(ask("Say three."), agent="high", priority=5, max_tokens=4, timeout_s=120)
        assert b.snapshot().waiting == {1: 1, 5: 1}
        results = await asyncio.gather(first, low, high)
        assert [r.admission for r in results] == [1, 3, 2]  # high went before low
    finally:
        await b.stop()
