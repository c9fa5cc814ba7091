"""The runtime host in-process: structured recovery, one instance per home, ordered
shutdown. (test_instance.py drives the same host through `agentdeck run` with the real
model; here a backend stand-in that only records start and stop keeps it fast.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from helpers import AGENTS

from agents.config import default_config
from agents.errors import InvalidArgument
from agents.protocol import OWNER, SYSTEM
from agents.runtime import Host
from agents.store import Store, queries
from agents.store import reducers as r


class RecordingBackend:
    config = None  # no inference config of its own: the host keeps the one it was given

    def __init__(self, fail_stop: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_stop = fail_stop

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")
        if self.fail_stop:
            raise RuntimeError("backend would not stop")

    def snapshot(self) -> dict[str, int]:
        return {"slots": 5}


async def test_recovery_is_returned_as_data(db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "t", owner="dev")
        call = store.write(r.start_tool_call, "dev", "run_shell", {"command": "make"}, task_id=task.id)
        pending = store.write(r.request_approval, "dev", "run_shell", {}, "make", "why", timeout_s=600)
        overdue = store.write(r.request_approval, "dev", "run_shell", {}, "ls", "why", timeout_s=1)
        store.conn.execute("UPDATE approvals SET expires_at = 1 WHERE id = ?", (overdue.id,))
        store.write(r.set_schedule, OWNER, "ops", "nightly", 300, first_run_at=time.time() - 3600)
    backend = RecordingBackend()
    async with Host(db_path, default_config(), backend=backend, approvals="cli") as host:
        rec = host.recovery
        assert rec is not None
        assert [c.id for c in rec.interrupted] == [call.id]
        assert rec.expired == [overdue.id]
        assert [a.id for a in rec.pending] == [pending.id] and rec.denied_by_policy == []
        assert len(rec.schedules_fired) == 1
        row = await host.store.read(queries.instance)
        assert row["pid"] == host.pid
    assert backend.calls == ["start", "stop"]
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.instance) is None  # released


async def test_the_deny_policy_denies_what_was_pending(db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        pending = store.write(r.request_approval, "dev", "run_shell", {}, "make", "why", timeout_s=600)
    async with Host(db_path, default_config(), backend=RecordingBackend()) as host:
        assert host.recovery is not None and host.recovery.denied_by_policy == [pending.id]
        approval = await host.store.read(queries.approval, pending.id)
        assert (approval.status, approval.decided_by) == ("denied", "headless_policy")


async def test_a_second_host_on_the_same_home_is_refused(db_path: Path) -> None:
    async with Host(db_path, default_config(), backend=RecordingBackend()):  # this live process
        second = RecordingBackend()
        with pytest.raises(InvalidArgument, match="another agentdeck instance"):
            async with Host(db_path, default_config(), backend=second, pid=999_999_002):
                pass
        assert second.calls == []  # refused before its model would load


async def test_shutdown_finishes_every_step_when_one_fails(db_path: Path) -> None:
    backend = RecordingBackend(fail_stop=True)
    async with Host(db_path, default_config(), backend=backend):
        pass
    assert backend.calls == ["start", "stop"]
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.instance) is None  # released although stop() failed
        store.write(r.claim_instance, SYSTEM, 4242)  # and the home is free to claim


async def test_shutdown_ends_within_one_deadline_however_many_steps_stall(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: each step had 3 s of its own (18 s in all) while the exit watchdog gave
    10 s, so a slow but healthy stop was killed part-way. One deadline now bounds the
    whole shutdown, the cheap last steps (the row, the store) still get their slice, and
    the watchdog's grace is longer than all of it. (Shortened here to run fast.)"""
    from agents.runtime import host as host_module

    assert host_module.SHUTDOWN_S + 2 * host_module.LAST_STEP_S < host_module.EXIT_GRACE_S
    monkeypatch.setattr(host_module, "SHUTDOWN_S", 1.0)
    monkeypatch.setattr(host_module, "SHUTDOWN_STEP_S", 0.6)
    release = asyncio.Event()

    async def stall() -> None:  # swallows cancellation until the test ends
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    backend = RecordingBackend()
    backend.stop = stall  # type: ignore[method-assign]
    host = Host(db_path, default_config(), backend=backend)
    await host.__aenter__()
    host._loops.append(asyncio.create_task(stall()))  # a loop that will not end
    assert host.bus is not None
    host.bus.close = stall  # type: ignore[method-assign]
    started = time.monotonic()
    await host.__aexit__(None, None, None)
    took = time.monotonic() - started
    release.set()
    await asyncio.sleep(0.05)  # the stalled steps end
    assert took < 1.0 + 0.3  # three stalled steps of 0.6 s each took 1.8 s before
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.instance) is None  # released all the same


async def test_a_full_disk_is_said_once_not_every_tick(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15: on a full disk every loop logged the raw "disk I/O error; retrying" every
    second. It is told as a full disk, once, and once more when writes succeed again."""
    import logging
    import shutil
    import sqlite3

    from agents.runtime import host as host_module

    monkeypatch.setattr(host_module, "TICK_S", 0.02)
    failed: list[str] = []
    ten_ticks, beat_again = asyncio.Event(), asyncio.Event()

    async def full_disk(reducer: object, *args: object, **kwargs: object) -> object:
        failed.append(getattr(reducer, "__name__", "?"))
        if failed.count("instance_heartbeat") >= 10:  # ten ticks, every loop failing
            ten_ticks.set()
        err = sqlite3.OperationalError("disk I/O error")  # a WAL that cannot grow
        err.sqlite_errorcode = 10  # type: ignore[attr-defined]
        raise err

    caplog.set_level(logging.INFO, logger="agents.runtime.host")
    async with Host(db_path, default_config(), backend=RecordingBackend()) as host:
        writes = host.store.write

        async def room_again(reducer: object, *args: object, **kwargs: object) -> object:
            result = await writes(reducer, *args, **kwargs)  # type: ignore[arg-type]
            if reducer is r.instance_heartbeat:
                beat_again.set()
            return result

        with monkeypatch.context() as patched:
            patched.setattr(shutil, "disk_usage",
                            lambda _path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 512))  # type: ignore[attr-defined]
            patched.setattr(host.store, "write", full_disk)
            await ten_ticks.wait()
        host.store.write = room_again  # type: ignore[method-assign]
        await beat_again.wait()
        await asyncio.sleep(0)  # the heartbeat's task logs right after its write
        host.store.write = writes  # type: ignore[method-assign]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    [warning] = warnings  # one, not one per tick and loop
    assert warning.startswith(f"disk full: {db_path.parent} has 512 bytes free; free at least ")
    assert warning.endswith(" MiB; waiting")
    assert "expire_approvals" in failed  # the other loops failed too, unsaid
    assert "the disk has room again: writes succeed" in caplog.text
    assert "disk I/O error" not in caplog.text


@pytest.mark.timeout(120)
async def test_the_crew_budgets_prompts_from_the_context_the_engine_really_has(db_path: Path) -> None:
    """The engine lowers an n_ctx past what its slots can use at the model's trained
    context (8192 for SmolLM2); the crew's prompt budget must follow it, or prompts
    sized for the config's n_ctx are refused by the engine as too long."""
    import msgspec

    from agents.inference import Engine

    config = default_config()
    config = msgspec.structs.replace(config, inference=msgspec.structs.replace(
        config.inference, n_ctx=65536, slots=2, n_batch=64))
    engine = Engine(config.inference)
    with Store.open(db_path, AGENTS):
        pass
    async with Host(db_path, config, backend=engine, crew=True) as host:
        assert engine.config.n_ctx == 2 * 8192
        assert host.crew is not None and host.crew.config.inference.n_ctx == 2 * 8192
