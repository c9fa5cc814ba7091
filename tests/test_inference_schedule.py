"""Scheduling: chunked and fairly shared prefill, priority pre-emption that keeps the KV,
the model's trained context, the idle-cache cap and the KV layout (real SmolLM2-135M)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.config import InferenceConfig, SamplingConfig
from agents.inference import Engine, Generation, resolve_model_path
from agents.inference.planning import MIN_BUDGET, PrefillBudget, share_prefill

GREEDY = SamplingConfig(temperature=0.0, repeat_penalty=1.0, timeout_s=120.0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def long_prompt(agent: str, rules: int) -> list[dict[str, str]]:
    text = " ".join(f"Rule {i}: {agent} keeps note {i} about the build." for i in range(rules))
    return [{"role": "system", "content": f"You are {agent}. {text}"}, {"role": "user", "content": "Go on."}]


class Arrivals:
    """The order in which streamed pieces reach the event loop, per request name."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def follow(self, name: str, gen: Generation) -> None:
        async for _ in gen:
            self.log.append(name)
        await gen

    def pieces_before(self, name: str, first_of: str) -> int:
        """How many of `name`'s pieces arrived before `first_of`'s first piece."""
        return self.log[: self.log.index(first_of)].count(name)


# --- pure planning -------------------------------------------------------------------------


@given(
    budget=st.integers(0, 600),
    wants=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 400)), max_size=8),
)
def test_prefill_shares_are_fair_and_within_budget(budget: int, wants: list[tuple[int, int]]) -> None:
    given_ = share_prefill(budget, wants)
    assert len(given_) == len(wants)
    assert all(0 <= g <= w for g, (_, w) in zip(given_, wants, strict=True))
    assert sum(given_) == min(budget, sum(w for _, w in wants))  # nothing left unused
    for i, (pi, wi) in enumerate(wants):
        for j, (pj, _) in enumerate(wants):
            if pj < pi and given_[j] > 0:  # a lower priority got tokens only if i was served
                assert given_[i] == wi
            if pj == pi and given_[i] < wi:  # i still wanted: nobody of its priority got 2 more
                assert given_[j] <= given_[i] + 1


def test_prefill_budget_fills_the_batch_when_nobody_generates_and_adapts_otherwise() -> None:
    b = PrefillBudget(n_batch=512)
    assert b.tokens(generating=False) == 512
    assert b.tokens(generating=True) == 64  # nothing timed yet
    b.observe(0.020, generated=5, prompt=0)  # a 20 ms generation step
    b.observe(0.020 + 64 * 0.001, generated=5, prompt=64)  # 1 ms per prompt token beside it
    assert b.tokens(generating=True) == 20  # 20 ms of prompt tokens: about twice a step
    for _ in range(50):  # prompt tokens turn cheap (a GPU): the budget grows to the batch
        b.observe(0.020 + 64 * 0.00001, generated=5, prompt=64)
    assert b.tokens(generating=True) == 512
    for _ in range(50):  # very slow prompt tokens: still a few per step
        b.observe(0.020 + 64 * 1.0, generated=5, prompt=64)
    assert b.tokens(generating=True) == MIN_BUDGET
    assert PrefillBudget(n_batch=512, fixed=32).tokens(generating=True) == 32


# --- the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine(InferenceConfig(n_ctx=8192, slots=5, n_batch=512, prefill_budget=32), sampling=GREEDY)
    eng.start_sync()
    yield eng
    eng.stop_sync()


@pytest.mark.timeout(300)
async def test_a_long_prompt_does_not_stall_generating_sequences(engine: Engine) -> None:
    """While a ~1.4k-token prompt is prefilled, the sequences already generating get a token
    every step: at 32 prompt tokens a step that is ~40 tokens each before its first token.
    Fed whole (512 a step, as before) it was about 3."""
    arrivals = Arrivals()
    runners = [
        engine.submit(ask(f"Write a long story {i}."), agent=f"gen{i}", max_tokens=400, ignore_eos=True)
        for i in range(2)
    ]
    tasks = [asyncio.create_task(arrivals.follow(f"gen{i}", g)) for i, g in enumerate(runners)]
    async with asyncio.timeout(60):
        while arrivals.log.count("gen0") < 3 or arrivals.log.count("gen1") < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    big = engine.submit(long_prompt("reader", 90), agent="reader", max_tokens=2)
    await arrivals.follow("reader", big)
    result = await big
    assert result.finish_reason in ("stop", "length"), result
    prompt = result.usage.prompt_tokens - result.usage.cached_prompt_tokens
    assert prompt > 1200
    for name in ("gen0", "gen1"):
        during = arrivals.pieces_before(name, "reader") - 3
        assert during >= 0.8 * prompt / 32, (name, during, prompt)
    for r in runners:
        r.cancel()
    await asyncio.gather(*tasks)


@pytest.mark.timeout(300)
async def test_prompts_submitted_together_are_prefilled_together(engine: Engine) -> None:
    """Four long prompts at once advance side by side (they queued one at a time before),
    and a short prompt behind a long one is not made to wait for it."""
    arrivals = Arrivals()
    gens = {f"long{i}": engine.submit(long_prompt(f"long{i}", 60), agent=f"long{i}", max_tokens=4,
                                      ignore_eos=True) for i in range(4)}
    tasks = [asyncio.create_task(arrivals.follow(n, g)) for n, g in gens.items()]
    await asyncio.gather(*tasks)
    results = [await g for g in gens.values()]
    assert all(r.usage.prompt_tokens > 600 for r in results)
    firsts = [arrivals.log.index(n) for n in gens]
    # Every prompt's first token came before any request's third: none waited for the others.
    third = min(i for i, n in enumerate(arrivals.log) if arrivals.log[: i + 1].count(n) == 3)
    assert max(firsts) < third, arrivals.log

    arrivals = Arrivals()
    slow = engine.submit(long_prompt("slowpoke", 90), agent="slowpoke", max_tokens=2, ignore_eos=True)
    quick = engine.submit(ask("Say hi."), agent="quick", max_tokens=2, ignore_eos=True)
    await asyncio.gather(arrivals.follow("slowpoke", slow), arrivals.follow("quick", quick))
    assert arrivals.log.index("quick") < arrivals.log.index("slowpoke"), arrivals.log


@pytest.mark.timeout(300)
async def test_a_higher_priority_request_pauses_a_running_one_that_resumes_from_its_kv(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agents.inference")
    blockers = [
        engine.submit(ask(f"Tell a long tale {i}."), agent=f"busy{i}", priority=i % 2, max_tokens=160,
                      ignore_eos=True)
        for i in range(5)
    ]
    async with asyncio.timeout(60):
        while sum(s.tokens_generated > 0 for s in engine.snapshot().slots) < 5:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    urgent = await engine.submit(ask("Urgent: say yes."), agent="urgent", priority=10, max_tokens=3,
                                 ignore_eos=True)
    assert not any(b.done() for b in blockers)  # it did not wait for a slot to free
    assert urgent.usage.completion_tokens == 3 and urgent.usage.cached_prompt_tokens == 0
    results = await asyncio.gather(*(b.result() for b in blockers))
    assert [r.finish_reason for r in results] == ["length"] * 5
    assert [r.usage.completion_tokens for r in results] == [160] * 5
    pauses = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    # The lowest priority, youngest of them (busy4, priority 0) gave way, its KV kept.
    assert pauses == ["a higher priority request: paused busy4 (priority 0, KV kept in memory)"]


@pytest.mark.timeout(120)
async def test_equal_priorities_never_pause_each_other(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agents.inference")
    gens = [engine.submit(ask(f"Story {i}."), agent=f"eq{i}", max_tokens=24, ignore_eos=True) for i in range(7)]
    results = await asyncio.gather(*(g.result() for g in gens))
    assert all(r.usage.completion_tokens == 24 for r in results)
    assert not [r for r in caplog.records if "paused" in r.getMessage()]


@pytest.mark.timeout(120)
async def test_idle_caches_are_capped_to_their_prompts_start() -> None:
    eng = Engine(InferenceConfig(n_ctx=2048, slots=2, n_batch=256, idle_cache_tokens=64), sampling=GREEDY)
    await eng.start()
    try:
        first = await eng.submit(long_prompt("capped", 12), agent="capped", max_tokens=2)
        assert first.usage.prompt_tokens > 100
        held = {s.index: s.cached_tokens for s in eng.snapshot().slots}
        assert held[first.slot] == 64
        again = await eng.submit(long_prompt("capped", 12), agent="capped", max_tokens=2)
        assert again.slot == first.slot and again.usage.cached_prompt_tokens == 64
    finally:
        await eng.stop()


@pytest.mark.timeout(120)
async def test_split_layout_gives_each_slot_its_share_and_names_the_limit() -> None:
    eng = Engine(InferenceConfig(n_ctx=1024, slots=2, n_batch=256, kv_unified=False), sampling=GREEDY)
    await eng.start()
    try:
        r = await eng.submit(ask("Count."), agent="a", max_tokens=2000, ignore_eos=True)
        assert r.finish_reason == "length"
        assert r.usage.prompt_tokens + r.usage.completion_tokens == 512  # n_ctx / slots
        too_long = await eng.submit(long_prompt("wordy", 60), agent="b", max_tokens=2)
        assert too_long.finish_reason == "error" and "a slot holds 512" in (too_long.error or "")
    finally:
        await eng.stop()


def _with_trained_context(src: Path, dst: Path, n: int) -> Path:
    """A copy of the GGUF whose metadata says it was trained on `n` tokens of context."""
    shutil.copyfile(src, dst)
    key = b"llama.context_length"
    with dst.open("r+b") as f:
        head = f.read(1 << 16)
        at = head.index(key) + len(key)
        assert struct.unpack("<I", head[at : at + 4]) == (4,)  # GGUF type 4: uint32
        f.seek(at + 4)
        f.write(struct.pack("<I", n))
    return dst


@pytest.mark.timeout(120)
async def test_no_sequence_runs_past_the_models_trained_context(tmp_path: Path) -> None:
    model = _with_trained_context(resolve_model_path(None, ""), tmp_path / "short.gguf", 96)
    eng = Engine(InferenceConfig(model=str(model), n_ctx=2048, slots=2, kv_unified=True), sampling=GREEDY)
    await eng.start()
    try:
        r = await eng.submit(ask("Count to a thousand."), max_tokens=500, ignore_eos=True)
        assert r.finish_reason == "length"
        assert r.usage.prompt_tokens + r.usage.completion_tokens == 96
        long = await eng.submit(long_prompt("wordy", 10), max_tokens=2)
        assert long.finish_reason == "error"
        assert "trained on 96 tokens" in (long.error or "")
    finally:
        await eng.stop()


@pytest.mark.timeout(300)
async def test_five_sequences_that_outgrow_a_unified_pool_all_finish() -> None:
    """5 × ~330 cells in a 1,024-cell pool: some must pause and come back; none may starve
    (the crew once saw the engine fall to zero tokens/s under KV pressure)."""
    patient = SamplingConfig(temperature=0.0, repeat_penalty=1.0, timeout_s=280.0)
    eng = Engine(InferenceConfig(n_ctx=1024, slots=5, n_batch=128, kv_unified=True), sampling=patient)
    await eng.start()
    try:
        gens = [
            eng.submit(long_prompt(f"kv{i}", 5), agent=f"kv{i}", priority=i % 3, max_tokens=250,
                       ignore_eos=True)
            for i in range(5)
        ]
        results = await asyncio.gather(*(g.result() for g in gens))
    finally:
        await eng.stop()
    assert all(r.usage.prompt_tokens > 60 for r in results)
    assert [(r.finish_reason, r.usage.completion_tokens) for r in results] == [("length", 250)] * 5


@pytest.mark.timeout(300)
def test_bench_kv_measures_both_layouts_with_and_without_idle_caches(home: Path) -> None:
    import json

    from helpers import ok

    out = ok(home, "bench", "kv", "--agents", "2", "--idle", "1", "--idle-tokens", "300", "--tokens", "12",
             "--rounds", "2", "--json")
    report = json.loads(out)
    cells = {(c["layout"], c["idle_caches"]): c for c in report["cells"]}
    assert set(cells) == {("unified", 0), ("unified", 1), ("split", 0), ("split", 1)}
    for c in cells.values():
        assert 0 < c["step_ms_min"] <= c["step_ms_median"] <= c["step_ms_max"]
    assert all(cells[layout, 1]["idle_tokens_each"] > 200 for layout in ("unified", "split"))
    assert set(report["slowdown"]) == {"unified", "split"} and all(v > 0 for v in report["slowdown"].values())
