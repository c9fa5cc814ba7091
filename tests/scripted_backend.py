"""A scripted inference backend: pre-written outputs instead of a model, for
deterministic flow tests (always beside the real-model tests, never instead of them).

It behaves like the engine where a caller can tell: `submit()` returns a Generation that
streams the text in small pieces and then a Result; a request with a JSON schema gets an
output that must validate against that schema (a script that breaks the schema is a
broken test, reported as an 'error' result, as the engine reports a failed request);
cancellation and deadlines work; the meter shows which agents are being served and the
speed it was told to report (what the engine measures), from which callers derive deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema
import msgspec

from agents.config import InferenceConfig, SamplingConfig
from agents.inference.chat import MessageLike
from agents.inference.generation import Generation, deliver
from agents.inference.meter import MeterSnapshot, SlotInfo, Speed
from agents.inference.types import ChatMessage, Result, Usage

PIECE_CHARS = 4  # characters per streamed piece (about a token)
FAST = Speed(prompt_tps=1000.0, gen_tps=100.0, measured_at=0.0)  # a small model on a good machine


class ScriptRequest(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    messages: list[ChatMessage]
    schema: dict[str, Any] | None


Script = Callable[[ScriptRequest], str]


def queued(outputs: Mapping[str, Sequence[str]]) -> Script:
    """A script that answers each agent with its outputs in order (an IndexError-free
    'error' result once they run out, so a test sees what it forgot to script)."""
    left = {agent: deque(texts) for agent, texts in outputs.items()}

    def answer(request: ScriptRequest) -> str:
        queue = left.get(request.agent)
        if not queue:
            raise LookupError(f"no scripted output left for agent {request.agent!r}")
        return queue.popleft()

    return answer


class ScriptedBackend:
    """Meets `agents.inference.backend.Backend`, as the engine does."""

    def __init__(self, script: Script, *, slots: int = 5, step_s: float = 0.0,
                 config: InferenceConfig | None = None, speed: Speed | None = FAST) -> None:
        self.script = script
        self.speed = speed  # what the meter reports as measured; a test may change it
        self.step_s = step_s  # pause between pieces: lets tests see several requests at once
        self.slots = slots
        # None: the host keeps its own; a test may give one to act as an engine that lowered n_ctx.
        self.config: InferenceConfig | None = config
        self.load_time_s: float | None = 0.0
        self.requests: list[ScriptRequest] = []  # everything asked, for assertions
        self._active: dict[int, str] = {}  # request number -> agent, for the meter
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def snapshot(self) -> MeterSnapshot:
        agents = list(self._active.values())
        slots = [SlotInfo(index=i, agent=agents[i] if i < len(agents) else None,
                          state="generating" if i < len(agents) else "idle", tokens_generated=0,
                          tokens_per_s=0.0, cached_tokens=0) for i in range(self.slots)]
        return MeterSnapshot(ts=time.time(), state="ready" if self._running else "stopped", device="scripted",
                             model="scripted", slots=slots, waiting={}, kv_used=0, kv_total=0,
                             tokens_per_s=0.0, gpu=None, speed=self.speed)

    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        """A scripted model's tokens: words and punctuation marks (deterministic for tests)."""
        return len(re.findall(r"\w+|[^\w\s]", text))

    def submit(self, messages: Sequence[MessageLike], *, agent: str = "",
               sampling: SamplingConfig | None = None, schema: dict[str, Any] | None = None,
               max_tokens: int | None = None, stop: Sequence[str] = (), priority: int = 0,
               timeout_s: float | None = None, deadline: float | None = None,
               ignore_eos: bool = False) -> Generation:
        del stop, priority, ignore_eos  # accepted for the engine's signature; nothing to do
        chat = [m if isinstance(m, ChatMessage) else ChatMessage(role=m["role"], content=m["content"])
                for m in messages]
        request = ScriptRequest(agent=agent, messages=chat, schema=schema)
        self.requests.append(request)
        limit = max_tokens or (sampling.max_tokens if sampling else 512)
        if deadline is None and (timeout_s or (sampling and sampling.timeout_s)):
            deadline = time.monotonic() + (timeout_s or sampling.timeout_s)  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        gen = Generation(loop, limit + 2, threading.Event(), deadline=deadline, agent=agent)
        self._count += 1
        task = loop.create_task(self._play(gen, request, self._count, limit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return gen

    async def _play(self, gen: Generation, request: ScriptRequest, number: int, limit: int) -> None:
        self._active[number] = request.agent
        started = time.monotonic()
        sent: list[str] = []
        try:
            text, error = self._answer(request)
            if error is not None:
                deliver([(gen, "", self._result(request, "", "error", started, error))])
                return
            pieces = [text[i:i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)]
            reason = "length" if len(pieces) > limit else "stop"
            for piece in pieces[:limit]:
                if gen.cancel_requested:
                    reason = "cancelled"
                    break
                if gen.deadline is not None and time.monotonic() >= gen.deadline:
                    reason = "timeout"
                    break
                sent.append(piece)
                deliver([(gen, piece, None)])
                await asyncio.sleep(self.step_s)
            deliver([(gen, "", self._result(request, "".join(sent), reason, started, None))])
        finally:
            self._active.pop(number, None)

    def _answer(self, request: ScriptRequest) -> tuple[str, str | None]:
        try:
            text = self.script(request)
        except Exception as err:
            return "", f"script: {type(err).__name__}: {err}"
        if request.schema is not None:
            try:
                jsonschema.validate(json.loads(text), request.schema)
            except (ValueError, jsonschema.ValidationError) as err:
                message = err.message if isinstance(err, jsonschema.ValidationError) else str(err)
                return "", f"scripted output does not match the request's schema: {message}"
        return text, None

    @staticmethod
    def _result(request: ScriptRequest, text: str, reason: str, started: float, error: str | None) -> Result:
        prompt = sum(len(m.content) for m in request.messages) // PIECE_CHARS
        usage = Usage(prompt_tokens=prompt, completion_tokens=-(-len(text) // PIECE_CHARS),
                      decode_s=time.monotonic() - started)
        return Result(text=text, finish_reason=reason, usage=usage, agent=request.agent,  # type: ignore[arg-type]
                      error=error)
