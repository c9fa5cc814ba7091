"""The inference engine with the real SmolLM2-135M model (short outputs; no timing asserts)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import msgspec
import pytest

from agents.config import InferenceConfig, SamplingConfig
from agents.errors import ModelError
from agents.inference import Engine, Generation, Result, resolve_model_path
from agents.inference import engine as engine_mod
from agents.inference import generation as generation_mod
from agents.inference import scheduler as scheduler_mod
from agents.inference.model import read_shape
from agents.inference.scheduler import Scheduler

GREEDY = SamplingConfig(temperature=0.0, repeat_penalty=1.0, timeout_s=60.0)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """One engine for the module: loading is cheap, but every test re-using it is cheaper."""
    eng = Engine(InferenceConfig(n_ctx=4096, slots=5, n_batch=256), sampling=GREEDY)
    eng.start_sync()
    yield eng
    eng.stop_sync()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def collect(gen: Generation) -> tuple[str, Result]:
    pieces = [piece async for piece in gen]
    return "".join(pieces), await gen


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll, as the TUI does: the meter is read, not subscribed to."""
    async with asyncio.timeout(10.0):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def busy_slots(eng: Engine) -> set[int]:
    return {s.index for s in eng.snapshot().slots if s.state != "idle"}


async def test_five_concurrent_requests_get_their_token_counts(engine: Engine) -> None:
    counts = [8, 11, 14, 17, 20]
    gens = [
        engine.submit(
            ask(f"Write a long story about the number {n}."), agent=f"count{i}", max_tokens=n, ignore_eos=True
        )
        for i, n in enumerate(counts)
    ]
    outs = await asyncio.gather(*(collect(g) for g in gens))
    for n, (streamed, result) in zip(counts, outs, strict=True):
        assert result.finish_reason == "length", result
        assert result.usage.completion_tokens == n
        assert streamed == result.text and result.text.strip()
        assert result.usage.prompt_tokens > 0 and result.usage.ttft_s is not None
    # They ran side by side: five different slots.
    assert len({r.slot for _, r in outs}) == 5


class Flag(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool


class Triage(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["act", "delegate", "defer", "ignore"]
    priority: int


class Named(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    tags: list[str]


class Measure(msgspec.Struct, forbid_unknown_fields=True):
    count: int
    ratio: float


class Reflection(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Literal["done", "failed"]
    importance: Literal[1, 2, 3, 4, 5]
    lesson: str


SCHEMAS: list[tuple[type[msgspec.Struct], dict]] = [
    (Flag, {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}),
    (
        Triage,
        {
            "type": "object",
            "properties": {
                "action": {"enum": ["act", "delegate", "defer", "ignore"]},
                "priority": {"type": "integer"},
            },
            "required": ["action", "priority"],
        },
    ),
    (
        Named,
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            },
            "required": ["name", "tags"],
        },
    ),
    (
        Measure,
        {
            "type": "object",
            "properties": {"count": {"type": "integer"}, "ratio": {"type": "number"}},
            "required": ["count", "ratio"],
        },
    ),
    (
        Reflection,
        {
            "type": "object",
            "properties": {
                "outcome": {"enum": ["done", "failed"]},
                "importance": {"enum": [1, 2, 3, 4, 5]},
                "lesson": {"type": "string", "maxLength": 24},
            },
            "required": ["outcome", "importance", "lesson"],
        },
    ),
]


async def test_five_schema_constrained_requests_return_valid_json(engine: Engine) -> None:
    gens = [
        engine.submit(
            ask(f"Answer in JSON with the fields {sorted(schema['properties'])}."),
            agent=f"json{i}",
            schema=schema,
            max_tokens=96,
        )
        for i, (_, schema) in enumerate(SCHEMAS)
    ]
    results = await asyncio.gather(*(g.result() for g in gens))
    for (struct, schema), result in zip(SCHEMAS, results, strict=True):
        assert result.finish_reason == "stop", result  # the grammar ended the JSON
        value = msgspec.json.decode(result.text, type=struct)
        for prop, spec in schema["properties"].items():
            if "maxLength" in spec:
                assert len(getattr(value, prop)) <= spec["maxLength"]
        if isinstance(value, Named):
            assert len(value.tags) <= 3 and all(len(t) <= 8 for t in value.tags)


async def test_cancelling_one_of_five_frees_its_slot(engine: Engine) -> None:
    gens = [
        engine.submit(ask(f"Tell a long tale, part {i}."), agent=f"cancel{i}", max_tokens=80, ignore_eos=True)
        for i in range(5)
    ]
    victim = gens[2]
    seen: list[str] = []

    async def read_forever() -> None:
        async for piece in victim:
            seen.append(piece)

    reader = asyncio.create_task(read_forever())
    await wait_for(lambda: len(seen) >= 2 or reader.done())
    reader.cancel()  # cancelling the consumer cancels the sequence
    with pytest.raises(asyncio.CancelledError):
        await reader
    cancelled = await victim
    assert cancelled.finish_reason == "cancelled"
    assert 0 < cancelled.usage.completion_tokens < 80
    assert cancelled.slot is not None
    # Its slot is idle while the other four still generate.
    snap = engine.snapshot()
    assert snap.slots[cancelled.slot].state == "idle"
    assert busy_slots(engine) == {r for r in range(5)} - {cancelled.slot}
    # ... and a new request gets that slot and finishes before the long ones.
    sixth = await engine.submit(ask("Say hi."), agent="cancel-new", max_tokens=3, ignore_eos=True)
    assert sixth.slot == cancelled.slot and sixth.finish_reason == "length"
    assert not any(g.done() for g in gens if g is not victim)
    others = await asyncio.gather(*(g.result() for g in gens if g is not victim))
    assert [r.finish_reason for r in others] == ["length"] * 4
    assert all(r.usage.completion_tokens == 80 for r in others)


async def test_breaking_out_of_the_stream_cancels_the_sequence(engine: Engine) -> None:
    gen = engine.submit(ask("Write a very long story."), agent="quitter", max_tokens=2000, ignore_eos=True)
    async for _piece in gen:
        break  # the stream is dropped here: leaving it must cancel the sequence
    async with asyncio.timeout(10.0):
        result = await gen
    assert result.finish_reason == "cancelled", result
    assert 0 < result.usage.completion_tokens < 2000
    assert result.slot is not None
    await wait_for(lambda: engine.snapshot().slots[result.slot].state == "idle")


async def test_async_with_and_aclose_cancel_the_sequence(engine: Engine) -> None:
    gen = engine.submit(ask("Write a very long story."), agent="closer", max_tokens=2000, ignore_eos=True)
    pieces = aiter(gen)  # held, so only leaving the block can cancel it
    async with gen as same:
        assert same is gen
        first = await anext(pieces)
    async with asyncio.timeout(10.0):
        result = await gen
    assert result.finish_reason == "cancelled", result
    await gen.aclose()  # closing a finished generation changes nothing
    assert (await gen).finish_reason == "cancelled"
    rest = [p async for p in pieces]  # what was queued before the cancel, then the end
    assert first + "".join(rest) == result.text
    # aclose() on its own cancels as well.
    other = engine.submit(ask("Write a very long story."), agent="closer", max_tokens=2000, ignore_eos=True)
    await other.aclose()
    async with asyncio.timeout(10.0):
        assert (await other).finish_reason == "cancelled"


async def test_more_requests_than_slots_admits_higher_priority_first(engine: Engine) -> None:
    blockers = [
        engine.submit(
            ask("Count slowly."), agent=f"block{i}", priority=9, max_tokens=12 + 4 * i, ignore_eos=True
        )
        for i in range(5)
    ]
    low = engine.submit(ask("Low priority."), agent="low", priority=0, max_tokens=2)
    high = engine.submit(ask("High priority."), agent="high", priority=3, max_tokens=2)
    await wait_for(lambda: engine.snapshot().waiting == {0: 1, 3: 1} or high.done())
    low_r, high_r = await low, await high
    await asyncio.gather(*(b.result() for b in blockers))
    assert high_r.admission is not None and low_r.admission is not None
    assert high_r.admission < low_r.admission
    assert high_r.usage.queue_wait_s > 0 and low_r.usage.queue_wait_s > high_r.usage.queue_wait_s


async def test_deadline_ends_with_timeout_and_frees_the_slot(engine: Engine) -> None:
    gen = engine.submit(
        ask("Write forever."), agent="slowpoke", max_tokens=3000, ignore_eos=True, timeout_s=0.4
    )
    result = await gen
    assert result.finish_reason == "timeout"
    assert result.usage.completion_tokens < 3000
    assert result.slot is not None
    assert engine.snapshot().slots[result.slot].state == "idle"


async def test_deadline_while_waiting_for_a_slot(engine: Engine) -> None:
    # Blockers long enough to outlast the late request's deadline on any hardware (a GPU
    # could finish short ones first); cancelled once the point is made.
    blockers = [
        engine.submit(ask("Busy."), agent=f"wait{i}", max_tokens=500, ignore_eos=True, priority=5)
        for i in range(5)
    ]
    try:
        late = await engine.submit(ask("Too late."), agent="late", timeout_s=0.05)
        assert late.finish_reason == "timeout" and late.slot is None
        assert late.usage.completion_tokens == 0
        assert not any(b.done() for b in blockers)  # they held every slot throughout
    finally:
        for b in blockers:
            b.cancel()
    results = await asyncio.gather(*(b.result() for b in blockers))
    assert [r.finish_reason for r in results] == ["cancelled"] * 5


async def test_shared_prefix_reuses_the_slot_cache(engine: Engine) -> None:
    system = " ".join(
        f"Rule {i}: agents keep their notes short, cite files and lines, and ask first." for i in range(20)
    )
    first = await engine.submit(
        [{"role": "system", "content": system}, {"role": "user", "content": "Status?"}],
        agent="cachey",
        max_tokens=4,
    )
    second = await engine.submit(
        [{"role": "system", "content": system}, {"role": "user", "content": "Plan?"}],
        agent="cachey",
        max_tokens=4,
    )
    assert first.usage.prompt_tokens > 300
    assert second.slot == first.slot  # slot affinity by agent
    assert second.usage.cached_prompt_tokens > 300
    assert second.usage.evaluated_prompt_tokens < first.usage.evaluated_prompt_tokens / 10
    # Another agent with the same prefix lands on the slot with the longest common prefix.
    third = await engine.submit(
        [{"role": "system", "content": system}, {"role": "user", "content": "Risks?"}],
        agent="stranger",
        max_tokens=4,
    )
    assert third.slot == first.slot and third.usage.cached_prompt_tokens > 300


async def test_identical_prompt_still_evaluates_one_token(engine: Engine) -> None:
    msgs = ask("Repeat after me: the same prompt twice.")
    a = await engine.submit(msgs, agent="twice", max_tokens=3)
    b = await engine.submit(msgs, agent="twice", max_tokens=3)
    assert b.usage.cached_prompt_tokens == b.usage.prompt_tokens - 1
    assert b.usage.evaluated_prompt_tokens == 1
    assert a.text == b.text  # greedy, same logits


async def test_stop_string_ends_generation(engine: Engine) -> None:
    msgs = ask("Describe a red bicycle in three sentences.")
    free = await engine.submit(msgs, agent="stopper", max_tokens=30, ignore_eos=True)
    words = free.text.split()
    assert len(words) > 4
    stop = " " + words[3]  # a stop string the greedy model is about to write
    stopped = await engine.submit(msgs, agent="stopper", max_tokens=30, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)


async def test_meter_snapshot_without_gpu(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "read_gpu", lambda index=0: None)
    monkeypatch.setattr(engine, "_gpu_cache", (0.0, None))
    snap = engine.snapshot()
    assert snap.device == "CPU" and snap.gpu is None and snap.state == "ready"
    assert [s.index for s in snap.slots] == [0, 1, 2, 3, 4]
    assert 0 <= snap.kv_used <= snap.kv_total and snap.kv_total >= 4096
    decoded = msgspec.json.decode(msgspec.json.encode(snap))
    assert decoded["device"] == "CPU" and len(decoded["slots"]) == 5
    # While a request runs the meter shows its agent and its progress.
    gen = engine.submit(ask("Talk."), agent="metered", max_tokens=40, ignore_eos=True)
    await wait_for(
        lambda: (
            any(s.agent == "metered" and s.tokens_generated > 2 for s in engine.snapshot().slots)
            or gen.done()
        )
    )
    running = [s for s in engine.snapshot().slots if s.agent == "metered"]
    await gen
    assert running and running[0].state in ("prefill", "generating")
    assert engine.snapshot().slots[running[0].index].state == "idle"


async def test_snapshot_never_calls_nvml_on_the_callers_thread(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    callers: list[threading.Thread] = []

    def recording_read_gpu(index: int = 0) -> None:
        callers.append(threading.current_thread())
        return None

    monkeypatch.setattr(engine_mod, "read_gpu", recording_read_gpu)
    monkeypatch.setattr(engine, "_gpu_cache", (0.0, None))  # stale: a refresh is due
    for _ in range(3):
        assert engine.snapshot().gpu is None
    # The engine thread refreshes the reading on its own (idle tick or next step).
    await wait_for(lambda: engine.snapshot() is not None and bool(callers))
    assert threading.current_thread() not in callers
    assert {t.name for t in callers} == {"agentdeck-inference"}


async def test_submit_after_stop_is_an_error_result(tmp_path: Path) -> None:
    eng = Engine(InferenceConfig(n_ctx=512, slots=1), sampling=GREEDY)
    await eng.start()
    await eng.stop()
    result = await eng.submit(ask("Hello?"), max_tokens=2)
    assert result.finish_reason == "error" and "not running" in (result.error or "")
    assert eng.snapshot().state == "stopped"


async def test_result_is_bounded_when_the_engine_never_answers() -> None:
    # No engine thread at all: nobody will ever resolve these. Past deadline + grace,
    # the waiter gives up with a timeout result instead of hanging.
    loop = asyncio.get_running_loop()
    long_ago = time.monotonic() - generation_mod._ANSWER_GRACE_S - 1.0
    wake = threading.Event()
    gen = Generation(loop, 4, wake, deadline=long_ago)
    async with asyncio.timeout(5.0):
        result = await gen
    assert result.finish_reason == "timeout"
    assert "did not answer" in (result.error or "")
    assert gen.done() and gen.cancel_requested and wake.is_set()
    # A stream reader is bounded the same way.
    streamed = Generation(loop, 4, threading.Event(), deadline=long_ago)
    async with asyncio.timeout(5.0):
        pieces = [p async for p in streamed]
    assert pieces == [] and (await streamed).finish_reason == "timeout"


async def test_submit_racing_stop_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine(InferenceConfig(n_ctx=512, slots=1), sampling=GREEDY)
    await eng.start()
    await eng.stop()  # the thread has drained its inbox and ended
    # The race: submit saw `running` just before stop() and queued after the last drain.
    monkeypatch.setattr(Engine, "running", property(lambda self: True))
    gen = eng.submit(ask("Hello?"), max_tokens=2, timeout_s=60.0)
    async with asyncio.timeout(5.0):
        result = await gen
    assert result.finish_reason == "error" and "stopped" in (result.error or "")


class _Boom(BaseException):
    """Escapes the scheduler loop's `except Exception`, as a bug in its handler would."""


async def test_engine_thread_crash_answers_every_held_request(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine(InferenceConfig(n_ctx=512, slots=1), sampling=GREEDY)
    real_step = Scheduler._step

    def step(self: Scheduler, active: list) -> None:
        if self.inbox is eng._inbox:  # only this engine's scheduler, not the module's
            raise _Boom("simulated crash")
        real_step(self, active)

    monkeypatch.setattr(Scheduler, "_step", step)
    await eng.start()
    try:
        # One request in the slot, one waiting for it: the first step kills the loop.
        gens = [eng.submit(ask(f"Question {i}?"), max_tokens=4, timeout_s=60.0) for i in range(2)]
        async with asyncio.timeout(10.0):
            results = await asyncio.gather(*(g.result() for g in gens))
        assert [r.finish_reason for r in results] == ["error", "error"]
        assert all("engine" in (r.error or "") for r in results)
        # The dead engine takes no more requests and says so at once.
        late = await eng.submit(ask("Anyone?"), max_tokens=2)
        assert late.finish_reason == "error" and "not running" in (late.error or "")
        assert eng.snapshot().state == "failed"
    finally:
        await eng.stop()


async def test_short_kv_pauses_a_sequence_instead_of_crashing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 256 cells for two sequences that each need ~155: one must be paused and resumed.
    caplog.set_level(logging.INFO, logger="agents.inference")
    eng = Engine(InferenceConfig(n_ctx=256, slots=2, n_batch=64, kv_unified=True), sampling=GREEDY)
    await eng.start()
    try:
        gens = [
            eng.submit(
                ask(f"Tell story {i} with many words."),
                agent=f"kv{i}",
                priority=i,
                max_tokens=120,
                ignore_eos=True,
            )
            for i in range(2)
        ]
        results = await asyncio.gather(*(g.result() for g in gens))
    finally:
        await eng.stop()
    assert [r.finish_reason for r in results] == ["length", "length"]
    assert [r.usage.completion_tokens for r in results] == [120, 120]
    # The lower priority one (kv0) was paused, once: it came back only with room to finish.
    pauses = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert len(pauses) == 1 and "paused kv0" in pauses[0]


async def test_kv_shortage_on_decode_evicts_one_idle_cache_not_all(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    eng = Engine(InferenceConfig(n_ctx=512, slots=4, n_batch=64, kv_unified=True), sampling=GREEDY)
    await eng.start()
    try:
        # Three agents at once take three slots and leave their prompts cached there.
        warm = [
            eng.submit(ask(f"Agent {i} remembers the number {i * 7}."), agent=f"cached{i}", max_tokens=2)
            for i in range(3)
        ]
        await asyncio.gather(*(g.result() for g in warm))
        before = {s.index for s in eng.snapshot().slots if s.cached_tokens > 0}
        assert len(before) == 3
        # The next decode reports no KV slot (1), as fragmentation would, then recovers.
        real_decode = llama_cpp.llama_decode
        faults = [1]

        def decode(ctx: object, batch: object) -> int:
            return faults.pop() if faults else real_decode(ctx, batch)

        monkeypatch.setattr(llama_cpp, "llama_decode", decode)
        result = await eng.submit(ask("A newcomer asks a question."), agent="newcomer", max_tokens=2)
        assert not faults and result.finish_reason in ("stop", "length"), result
        others = before - {result.slot}
        still = {s.index for s in eng.snapshot().slots if s.cached_tokens > 0 and s.index in others}
        # One shortage costs one cache (the least recently used), not every agent's.
        assert len(still) == len(others) - 1 >= 1
    finally:
        await eng.stop()


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError) as info:
        Engine(InferenceConfig(model=str(missing)))
    assert str(missing) in str(info.value) and "--model" in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_non_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 definitely a zip file, not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        Engine(InferenceConfig(), model_path=bogus)


def test_truncated_gguf_fails_to_load_with_a_model_error(tmp_path: Path) -> None:
    real = resolve_model_path(None, "")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(real.read_bytes()[:4096])
    eng = Engine(InferenceConfig(n_ctx=512, slots=1), model_path=cut)
    with pytest.raises(ModelError) as info:
        eng.start_sync()
    assert str(cut) in str(info.value)


def test_model_resolution_order(tmp_path: Path) -> None:
    real = resolve_model_path(None, "")
    assert real.suffix == ".gguf" and real.is_file()  # the embedded SmolLM2
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + b"\0" * 16)
    assert resolve_model_path(None, str(other)) == other
    assert resolve_model_path(real, str(other)) == real  # --model wins over config
    with pytest.raises(ModelError):
        resolve_model_path(tmp_path / "missing.gguf", str(other))


async def test_bad_arguments_raise_at_submit(engine: Engine) -> None:
    with pytest.raises(ValueError):
        engine.submit([], max_tokens=2)
    with pytest.raises(ValueError):
        engine.submit(ask("x"), max_tokens=0)
    with pytest.raises(ValueError):
        engine.submit(ask("x"), schema={"type": "no-such-type"})


async def test_count_tokens_uses_the_models_tokenizer(engine: Engine) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    n = await engine.count_tokens(text)
    # SmolLM2's BPE: about one token per English word or mark, far fewer than characters.
    assert 150 <= n <= 260 < len(text)
    assert await engine.count_tokens("") == 0
    prompt = await engine.count_tokens(text + text)
    assert prompt in range(2 * n - 2, 2 * n + 3)  # the tokenizer, not a character estimate


def test_json_strings_in_grammars_exclude_control_characters() -> None:
    from agents.inference.grammar import schema_to_gbnf

    gbnf = schema_to_gbnf({"type": "object", "properties": {"poem": {"type": "string"}}, "required": ["poem"]})
    char = next(line for line in gbnf.splitlines() if line.startswith("char ::="))
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F]'), char


@pytest.mark.timeout(120)
async def test_an_enum_of_strings_with_quotes_and_backslashes_is_a_grammar_llama_cpp_takes(engine: Engine) -> None:
    """The lines of a JSON file offered as edit_file's `old`: llama-cpp-python's converter
    left the backslash of `\\"` unescaped, and llama.cpp rejected the grammar (measured)."""
    lines = ['  "retries": 3', 'path = C:\\temp\\"x"', "{"]
    schema = {"type": "object", "properties": {"old": {"enum": lines}}, "required": ["old"],
              "additionalProperties": False}
    for prompt in ("Pick the retries line.", "Pick the path line.", "Pick the brace."):
        res = await engine.submit(ask(prompt), agent="picker", schema=schema, max_tokens=48).result()
        assert json.loads(res.text)["old"] in lines, res.text


@pytest.mark.timeout(300)  # 15 sampled answers: past the 120 s default on a loaded machine
async def test_schema_output_is_strict_json_even_for_multiline_text(engine: Engine) -> None:
    """The model likes newlines in a poem; in a JSON string they must come out escaped."""
    schema = {"type": "object", "properties": {"poem": {"type": "string"}}, "required": ["poem"]}
    # Before the fix, 6 of 15 such answers held a raw newline (measured).
    prompts = ["Write a poem of four short lines about the sea, one line per line.",
               "List three fruits, one per line.", "Write a haiku in three lines.",
               "Write a shopping list with 4 items, each on its own line.",
               "Write a short letter: greeting, body, signature, each on a new line."]
    results: list[Result] = []
    for _round in range(3):
        gens = [engine.submit(ask(p), agent=f"poet{i}", schema=schema, max_tokens=64,
                              sampling=SamplingConfig(temperature=0.8)) for i, p in enumerate(prompts)]
        results += await asyncio.gather(*(g.result() for g in gens))
    for res in results:
        assert not any(ord(c) < 0x20 for c in res.text), repr(res.text)
        if res.finish_reason == "stop":
            assert isinstance(msgspec.json.decode(res.text)["poem"], str)


async def test_the_stream_equals_the_result_for_every_length(engine: Engine) -> None:
    """The audit found 16 of 24 max_tokens values where the stream and Result.text differed
    on emoji prompts (a held partial stop, a character cut by the length limit)."""
    prompt = ask("Reply with three emoji and the word STOP: 🙂🚀🎉")
    for first in range(1, 25, 6):
        gens = [engine.submit(prompt, agent=f"emoji{n}", max_tokens=n, stop=["STOP"])
                for n in range(first, first + 6)]
        for gen in gens:
            streamed = "".join([piece async for piece in gen])
            result = await gen
            assert streamed == result.text, (result.usage.completion_tokens, streamed, result.text)
            assert "\ufffd" not in result.text or result.finish_reason == "stop"


@pytest.mark.timeout(300)
async def test_agents_taking_turns_keep_their_own_slots_and_caches(engine: Engine) -> None:
    """Two agents with long, different system prompts take turns: each keeps a slot, so
    every later turn reuses its cached prompt (the audit saw both land on slot 0, sharing
    only the chat template's header, and lose ~1.6k cached tokens a turn)."""
    def prompt(agent: str, turn: int) -> list[dict[str, str]]:
        rules = " ".join(f"Rule {i}: {agent} keeps note {i} about the {agent} build." for i in range(50))
        return [{"role": "system", "content": f"You are {agent}. {rules}"},
                {"role": "user", "content": f"Turn {turn}: say ok."}]

    results = {}
    for turn in range(2):
        for agent in ("turnsA", "turnsB"):
            results[agent, turn] = await engine.submit(prompt(agent, turn), agent=agent, max_tokens=2)
    assert results["turnsA", 0].slot != results["turnsB", 0].slot
    for agent in ("turnsA", "turnsB"):
        later = results[agent, 1]
        assert later.slot == results[agent, 0].slot
        assert later.usage.prompt_tokens > 400
        assert later.usage.cached_prompt_tokens >= 0.9 * later.usage.prompt_tokens, later.usage


# --- n_ctx against the model's trained context and the machine's memory ---


def test_the_kv_estimate_is_what_llama_cpp_allocates(caplog: pytest.LogCaptureFixture) -> None:
    """The refusal below is only as good as the estimate: it must match llama.cpp's own."""
    caplog.set_level(logging.DEBUG, logger="agents.inference.llama")
    eng = Engine(InferenceConfig(n_ctx=4096, slots=2, n_batch=64))
    eng.start_sync()
    eng.stop_sync()
    shape = read_shape(eng.model_path)
    assert shape is not None and shape.n_ctx_train == 8192  # SmolLM2-135M
    allocated = re.search(r"llama_kv_cache: size = +([\d.]+) MiB", caplog.text)
    assert allocated is not None
    assert shape.kv_bytes(4096) == round(float(allocated[1]) * (1 << 20))


def test_n_ctx_past_what_the_slots_can_use_is_clamped_with_one_notice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eng = Engine(InferenceConfig(n_ctx=65536, slots=2, n_batch=64))
    eng.start_sync()
    try:
        assert eng.snapshot().kv_total == 2 * 8192  # two sequences of the trained context
        assert eng.config.n_ctx == 2 * 8192
    finally:
        eng.stop_sync()
    notices = [r.getMessage() for r in caplog.records if "inference.n_ctx" in r.getMessage()]
    assert notices == ["inference.n_ctx 65536 is more than 2 slot(s) can use (the model was "
                       "trained on 8192 tokens a sequence); using 16384"]


def test_a_kv_cache_larger_than_memory_is_refused_before_the_weights_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(engine_mod.psutil, "virtual_memory", lambda: SimpleNamespace(available=100 << 20))
    monkeypatch.setattr(scheduler_mod, "LlamaModel", never)
    eng = Engine(InferenceConfig(n_ctx=8192, slots=5, n_gpu_layers=0))  # KV: 180 MiB
    with pytest.raises(ModelError) as err:
        eng.start_sync()
    assert str(err.value) == (
        "inference.n_ctx = 8192 needs ~0.2 GiB for the KV cache, the machine has 0.1 GiB "
        "available; lower inference.n_ctx"
    )
