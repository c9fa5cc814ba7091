"""The runner and the crew keep their house: the health rule never blocks the event loop,
finished routing jobs are let go, the rules-first checks are plain functions."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.config import parse_config
from agents.crew import runner
from agents.inference.scripted import ScriptedBackend, queued
from agents.protocol import OWNER
from agents.runtime import Host
from agents.store import reducers as r


def host_for(db_path: Path, tmp_path: Path, outputs: dict[str, list[str]] | None = None) -> Host:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    return Host(db_path, config, backend=ScriptedBackend(queued(outputs or {})), crew=True)  # type: ignore[arg-type]


async def wait_for(check: Callable[[], object], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- the health rule runs off the event loop ---


@pytest.mark.timeout(60)
async def test_the_health_rule_does_not_block_the_event_loop(db_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil's cpu_percent(interval=0.2) sleeps 0.2 s: the loop must keep ticking meanwhile."""
    real = runner.health_is_normal
    spans: list[tuple[float, float]] = []

    def measured() -> tuple[bool, str]:
        started = time.monotonic()
        try:
            return real()  # the real psutil reading, 0.2 s of it
        finally:
            spans.append((started, time.monotonic()))

    monkeypatch.setattr(runner, "health_is_normal", measured)
    ticks: list[float] = []

    async def probe() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async with host_for(db_path, tmp_path) as host:
        prober = asyncio.create_task(probe())
        try:
            await host.store.write(r.create_task, OWNER, "[health] scheduled check", owner="ops")
            await wait_for(lambda: asyncio.sleep(0, result=bool(spans)))
        finally:
            prober.cancel()
    [(start, end)] = spans
    assert end - start >= 0.15  # it did block its thread for the interval
    during = [t for t in ticks if start <= t <= end]
    around = [t for t in ticks if t <= start][-1:] + during + [t for t in ticks if t >= end][:1]
    longest = max(b - a for a, b in itertools.pairwise(around))
    assert len(during) >= 3 and longest < 0.12, (len(during), longest)
