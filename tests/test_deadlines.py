"""Limits that fit the model: the deadline arithmetic (pure), the speed the engine measures
(a real SmolLM2 engine), and the runner deriving each call's deadline from it and naming
the limit a timeout hit (the scripted backend)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from scripted_backend import ScriptedBackend, queued

from agents.config import InferenceConfig, SamplingConfig, parse_config
from agents.crew.deadlines import FACTOR, FLOOR_S, SLACK_S, plan_call
from agents.inference import build_backend
from agents.inference.meter import Speed, SpeedGauge
from agents.protocol import OWNER
from agents.runtime import Host
from agents.store import queries
from agents.store import reducers as r

KEY = "agents.dev.inference.timeout_s"
SLOW = Speed(prompt_tps=95.0, gen_tps=6.2, measured_at=0.0)  # Qwen-1.5B on 2 busy cores
FAST = Speed(prompt_tps=2000.0, gen_tps=200.0, measured_at=0.0)


# --- the arithmetic ---


@pytest.mark.timeout(10)
def test_a_derived_deadline_is_the_expected_work_times_the_factor_plus_slack() -> None:
    limit = plan_call(1210, 256, SLOW, override_s=0, most_s=600, key=KEY)
    expected = FACTOR * (1210 / 95 + 256 / 6.2) + SLACK_S
    assert limit.timeout_s == pytest.approx(expected) and limit.timeout_s > 120  # past the old fixed limit
    assert limit.max_tokens == 256
    assert limit.timed_out() == (
        f"model call timed out after {expected:,.0f} s (derived from 1,210 prompt tokens at 95 tok/s "
        f"and 256 new tokens at 6.2 tok/s; set {KEY} to fix it)")


@pytest.mark.timeout(10)
def test_a_slower_model_or_a_longer_prompt_gets_longer() -> None:
    def seconds(prompt: int, new: int, speed: Speed) -> float:
        return plan_call(prompt, new, speed, override_s=0, most_s=10_000, key=KEY).timeout_s

    assert seconds(1000, 384, SLOW) > seconds(1000, 384, FAST)
    assert seconds(2000, 384, SLOW) > seconds(1000, 384, SLOW) > seconds(1000, 96, SLOW)


@pytest.mark.timeout(10)
def test_the_floor_keeps_a_fast_models_call_from_a_hair_trigger() -> None:
    limit = plan_call(300, 96, FAST, override_s=0, most_s=600, key=KEY)
    assert limit.timeout_s == FLOOR_S and limit.max_tokens == 96
    assert plan_call(300, 96, FAST, override_s=0, most_s=20, key=KEY).timeout_s == 20  # never past the bound


@pytest.mark.timeout(10)
def test_past_the_upper_bound_the_deadline_is_the_bound_and_fewer_tokens_fit() -> None:
    crawl = Speed(prompt_tps=20.0, gen_tps=1.0, measured_at=0.0)
    limit = plan_call(1000, 384, crawl, override_s=0, most_s=300, key=KEY)
    assert limit.timeout_s == 300
    # What fits: (300 - slack) / factor seconds, less the prompt's 50 s, at 1 token/s.
    assert limit.max_tokens == int((300 - SLACK_S) / FACTOR - 1000 / 20.0)
    assert "inference.max_call_s = 300" in limit.timed_out() and "new tokens cut to 45" in limit.timed_out()
    hopeless = plan_call(10_000, 384, crawl, override_s=0, most_s=300, key=KEY)
    assert hopeless.timeout_s == 300 and hopeless.max_tokens == 16  # still a call, just short


@pytest.mark.timeout(10)
def test_an_override_is_fixed_and_says_so() -> None:
    limit = plan_call(1210, 256, SLOW, override_s=30, most_s=600, key=KEY)
    assert (limit.timeout_s, limit.max_tokens) == (30, 256)
    assert limit.timed_out() == f"model call timed out after 30 s ({KEY} = 30)"
    big = plan_call(10, 8, FAST, override_s=3600, most_s=600, key=KEY)
    assert big.timeout_s == 3600  # the person's choice stands, past max_call_s


@pytest.mark.timeout(10)
def test_without_a_measured_speed_the_bound_is_the_limit() -> None:
    limit = plan_call(1210, 256, None, override_s=0, most_s=600, key=KEY)
    assert (limit.timeout_s, limit.max_tokens) == (600, 256)
    assert "no speed measured" in limit.timed_out() and KEY in limit.timed_out()


# --- the gauge's moving averages ---


@pytest.mark.timeout(10)
def test_the_gauge_averages_only_steps_that_did_the_work() -> None:
    gauge = SpeedGauge()
    gauge.observe(0.1, prompt_tokens=64, prefilling=1, generating=1)
    assert gauge.speed is None  # nothing to average on before the warm-up
    gauge.warmed(100.0, 10.0)
    before = gauge.speed
    assert before is not None and (before.prompt_tps, before.gen_tps) == (100.0, 10.0)
    gauge.observe(0.05, prompt_tokens=8, prefilling=1, generating=0)  # too few prompt tokens to say
    assert gauge.speed == before
    gauge.observe(0.5, prompt_tokens=0, prefilling=0, generating=5)  # five sequences, a token each
    after = gauge.speed
    assert after is not None and after.prompt_tps == 100.0
    assert after.gen_tps == pytest.approx(10.0 + SpeedGauge.WEIGHT * (1 / 0.5 - 10.0))  # per sequence
    gauge.observe(1.0, prompt_tokens=400, prefilling=2, generating=0)  # two prompts share the step
    assert gauge.speed is not None and gauge.speed.prompt_tps == pytest.approx(100.0 + 0.2 * (200 - 100.0))


# --- the real engine measures its speed ---


@pytest.mark.timeout(180)
async def test_the_engine_measures_its_speed_at_load_and_from_requests() -> None:
    backend = build_backend(InferenceConfig(n_ctx=1024, slots=1, n_batch=64),
                            sampling=SamplingConfig(temperature=0.0, timeout_s=120))
    assert backend.snapshot().speed is None
    await backend.start()
    try:
        warm = backend.snapshot().speed
        assert warm is not None, "the warm-up measured nothing"
        # SmolLM2-135M: tens to thousands of tokens/s on an idle CPU or a GPU, but a 2-core
        # machine shared with other processes measured 0.34 generated tokens/s (threads
        # waiting for each other at every op), so the lower bounds only say "measured".
        assert 0.01 < warm.prompt_tps < 1e6 and 0.01 < warm.gen_tps < 1e5, warm
        prompt = "Summarise: " + "the disk is almost full and the logs keep growing. " * 12
        gen = backend.submit([{"role": "user", "content": prompt}], max_tokens=16, ignore_eos=True)
        result = await gen
        assert result.finish_reason == "length" and result.usage.prompt_tokens > 64, result
        after = backend.snapshot().speed
        assert after is not None and after.measured_at > warm.measured_at
        assert after.prompt_tps != warm.prompt_tps and after.gen_tps != warm.gen_tps  # both kinds observed
        assert 0.01 < after.prompt_tps < 1e6 and 0.01 < after.gen_tps < 1e5, after
    finally:
        await backend.stop()


# --- the runner derives each call's deadline and names the limit it hit ---


def host_with(db_path: Path, tmp_path: Path, backend: ScriptedBackend, extra: str = "") -> Host:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n{extra}')
    return Host(db_path, config, backend=backend, crew=True)  # type: ignore[arg-type]


def recording(backend: ScriptedBackend, shrink_to: float | None = None) -> list[float]:
    """The timeout_s of every dev call; `shrink_to`: submit with that instead (a call
    that times out at once), keeping the runner's own reckoning."""
    seen: list[float] = []
    real = backend.submit

    def submit(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("agent") == "dev":
            seen.append(kwargs["timeout_s"])
            if shrink_to is not None:
                kwargs["timeout_s"] = shrink_to
        return real(*args, **kwargs)

    backend.submit = submit  # type: ignore[method-assign]
    return seen


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def run_task(host: Host, title: str) -> tuple[str, str]:
    task = await host.store.write(r.create_task, OWNER, title, owner="dev")

    async def ended() -> bool:
        now = await host.store.read(queries.task, task.id)
        return now is not None and now.status in ("done", "failed")

    await wait_for(ended)
    done = await host.store.read(queries.task, task.id)
    assert done is not None
    return done.status, done.result or ""


DEV_SAYS = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "a haiku"}',
                    '{"outcome": "success", "lesson": "", "importance": 1, "tags": []}']}


@pytest.mark.timeout(60)
async def test_a_slow_measured_speed_gives_the_calls_longer_deadlines(tmp_path: Path) -> None:
    timeouts: dict[str, list[float]] = {}
    slower = Speed(prompt_tps=50.0, gen_tps=3.0, measured_at=0.0)  # every phase past the floor
    for name, speed in (("slow", slower), ("fast", FAST)):
        backend = ScriptedBackend(queued(DEV_SAYS), speed=speed)
        seen = recording(backend)
        async with host_with(tmp_path / f"{name}.db", tmp_path, backend) as host:
            assert await run_task(host, "write a haiku about tea") == ("done", "a haiku")
        timeouts[name] = seen
    slow, fast = timeouts["slow"], timeouts["fast"]
    assert len(slow) == len(fast) == 3  # triage, the step, the reflection
    assert all(s > f for s, f in zip(slow, fast, strict=True)), (slow, fast)
    assert fast == [FLOOR_S] * 3 and max(slow) <= 600


@pytest.mark.timeout(60)
async def test_a_timeout_names_the_derived_limit(db_path: Path, tmp_path: Path) -> None:
    backend = ScriptedBackend(queued(DEV_SAYS), speed=SLOW, step_s=0.05)
    seen = recording(backend, shrink_to=0.01)
    async with host_with(db_path, tmp_path, backend) as host:
        status, result = await run_task(host, "write a haiku about tea")
    assert status == "failed" and len(seen) == 1
    assert result.startswith(f"triage: model call timed out after {seen[0]:,.0f} s (derived from "), result
    assert "prompt tokens at 95 tok/s and 96 new tokens at 6.2 tok/s; set agents.dev.inference.timeout_s" in result


@pytest.mark.timeout(60)
async def test_a_timeout_names_the_fixed_limit(db_path: Path, tmp_path: Path) -> None:
    backend = ScriptedBackend(queued(DEV_SAYS), speed=SLOW, step_s=0.05)
    seen = recording(backend)
    async with host_with(db_path, tmp_path, backend, "[agents.dev.inference]\ntimeout_s = 0.01\n") as host:
        status, result = await run_task(host, "write a haiku about tea")
    assert status == "failed" and seen == [0.01]
    assert result == "triage: model call timed out after 0.01 s (agents.dev.inference.timeout_s = 0.01)"
