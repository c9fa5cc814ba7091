"""The scripted backend keeps the engine's contract, so flow tests built on it mean
something: streams equal results, schemas are enforced, cancellation and deadlines work."""

from __future__ import annotations

import asyncio
import time

import pytest
from scripted_backend import ScriptedBackend, ScriptRequest, queued

from agents.inference.types import ChatMessage

TRIAGE = {
    "type": "object",
    "properties": {"action": {"enum": ["act", "delegate", "defer", "ignore"]}, "reason": {"type": "string"}},
    "required": ["action", "reason"],
    "additionalProperties": False,
}


async def test_streams_the_scripted_text_and_its_result_agrees() -> None:
    backend = ScriptedBackend(queued({"ops": ['{"action": "act", "reason": "disk is a rule check"}']}))
    await backend.start()
    gen = backend.submit([ChatMessage(role="user", content="report disk usage")], agent="ops", schema=TRIAGE)
    pieces = [piece async for piece in gen]
    result = await gen
    assert len(pieces) > 3 and "".join(pieces) == result.text
    assert result.finish_reason == "stop" and result.agent == "ops"
    assert backend.requests[0].messages[0].content == "report disk usage"
    await backend.stop()


async def test_an_output_that_breaks_the_schema_is_an_error_result() -> None:
    backend = ScriptedBackend(queued({"ops": ['{"action": "panic", "reason": "x"}', "not json"]}))
    await backend.start()
    for expected in ("'panic' is not one of", "does not match"):
        result = await backend.submit([{"role": "user", "content": "x"}], agent="ops", schema=TRIAGE)
        assert result.finish_reason == "error" and expected in (result.error or ""), result
    result = await backend.submit([{"role": "user", "content": "x"}], agent="ops")
    assert result.finish_reason == "error" and "no scripted output left for agent 'ops'" in (result.error or "")
    await backend.stop()


async def test_cancel_length_and_deadline() -> None:
    backend = ScriptedBackend(lambda request: "word " * 200, step_s=0.01)
    await backend.start()
    gen = backend.submit([{"role": "user", "content": "x"}], agent="dev")
    async for _ in gen:
        gen.cancel()
    assert (await gen).finish_reason == "cancelled"
    short = await backend.submit([{"role": "user", "content": "x"}], agent="dev", max_tokens=3)
    assert short.finish_reason == "length" and short.text == "word word wo"
    late = await backend.submit([{"role": "user", "content": "x"}], agent="dev",
                                deadline=time.monotonic() + 0.05)
    assert late.finish_reason == "timeout" and len(late.text) < 1000
    await backend.stop()


async def test_the_meter_shows_concurrent_requests() -> None:
    backend = ScriptedBackend(lambda request: "x" * 200, step_s=0.01)
    await backend.start()
    gens = [backend.submit([{"role": "user", "content": "x"}], agent=a) for a in ("lead", "dev", "ops")]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5  # each request takes 2 s: all three run at once meanwhile

    def busy() -> set[str]:
        return {s.agent for s in backend.snapshot().slots if s.state == "generating"}

    while busy() != {"lead", "dev", "ops"} and loop.time() < deadline:  # noqa: ASYNC110 (polling a meter)
        await asyncio.sleep(0.005)
    assert busy() == {"lead", "dev", "ops"}
    await asyncio.gather(*gens)
    assert all(s.state == "idle" for s in backend.snapshot().slots)
    await backend.stop()


def test_script_request_is_data() -> None:
    r = ScriptRequest(agent="a", messages=[ChatMessage(role="user", content="x")], schema=None)
    with pytest.raises(AttributeError):
        r.agent = "b"  # type: ignore[misc]
