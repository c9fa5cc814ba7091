"""The bus and store under failure: errors don't kill readers, nothing leaks, cursors
belong to their agents, filtered readers don't re-read what they skipped."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from helpers import AGENTS

from agents.bus import Bus
from agents.errors import PermissionDenied, StoreOpenError
from agents.store import AsyncStore, EventFilter, Store, queries
from agents.store import reducers as r


async def test_a_reader_survives_an_unexpected_read_error(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(store).start()
    try:
        real = bus._next_events
        failures = {"left": 2}

        async def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("disk on fire")
            return await real(*args, **kwargs)

        monkeypatch.setattr(bus, "_next_events", flaky)
        sub = await bus.subscribe(start="now")
        task = await store.write(r.create_task, "owner", "still delivered", owner="dev")
        event = await asyncio.wait_for(sub.get(), timeout=5)
        assert failures["left"] == 0
        assert event.subject == f"task:{task.id}"
    finally:
        await bus.close()
        await store.close()


async def test_close_removes_the_commit_listener(db_path: Path) -> None:
    store = await AsyncStore(db_path, AGENTS).open()
    try:
        for _ in range(3):
            bus = await Bus(store).start()
            await bus.close()
        assert store._commit_listeners == []
    finally:
        await store.close()


async def test_a_failed_open_leaves_no_thread(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"not a database at all" * 10)
    with pytest.raises(StoreOpenError):
        await AsyncStore(bad, AGENTS).open()
    await asyncio.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("agentdeck-store")]


def test_agents_move_only_their_own_cursors(store: Store) -> None:
    assert store.write(r.save_cursor, "dev", "agent:dev", 5) == 5
    assert store.write(r.save_cursor, "dev", "agent:dev:approvals", 7) == 7
    for name in ("agent:lead", "agent:developer", "instance:approvals"):
        with pytest.raises(PermissionDenied):
            store.write(r.save_cursor, "dev", name, 9)
    assert store.read(queries.cursor, "agent:lead") is None
    assert store.write(r.save_cursor, "owner", "agent:lead", 3) == 3


async def test_an_idle_filtered_reader_saves_past_what_it_skipped(db_path: Path) -> None:
    store = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(store).start()
    try:
        sub = await bus.subscribe("agent:ops", EventFilter(recipient="ops"), start="now")
        wanted = await store.write(r.create_task, "owner", "for ops", owner="ops")
        for i in range(20):  # not for ops
            await store.write(r.create_task, "owner", f"for dev {i}", owner="dev")
        event = await asyncio.wait_for(sub.get(), timeout=5)
        assert event.subject == f"task:{wanted.id}"
        sub.ack(event.id)
        head = await store.read(queries.last_event_id)
        for _ in range(100):  # until the reader has scanned to the head
            if sub.position == head:
                break
            await asyncio.sleep(0.02)
        await bus.flush_cursors()
        assert await store.read(queries.cursor, "agent:ops") == head
        # With an unacknowledged event in hand the cursor stays at the last ack.
        await store.write(r.create_task, "owner", "for ops again", owner="ops")
        pending = await asyncio.wait_for(sub.get(), timeout=5)
        await bus.flush_cursors()
        assert await store.read(queries.cursor, "agent:ops") == head < pending.id
    finally:
        await bus.close()
        await store.close()


async def test_commits_from_another_connection_in_between_are_not_lost(db_path: Path) -> None:
    """In-process commits go straight into the ring; a foreign commit between two of ours
    leaves a gap that must be read from SQLite, in order, exactly once."""
    store = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(store, poll_interval=60).start()  # no help from the poller
    other = Store.open(db_path, AGENTS)  # another connection, as another process has
    try:
        sub = await bus.subscribe(start="now", flt=EventFilter(kinds=["task.created"]))
        titles = []
        for i in range(30):
            if i % 3 == 1:
                other.write(r.create_task, "owner", f"t{i}")
            else:
                await store.write(r.create_task, "owner", f"t{i}")
        while len(titles) < 30:
            event = await asyncio.wait_for(sub.get(), timeout=5)
            titles.append(event.payload.task.title)  # type: ignore[union-attr]
        assert titles == [f"t{i}" for i in range(30)]
        assert sub.queue.empty()
    finally:
        other.close()
        await bus.close()
        await store.close()


async def test_close_under_a_lock_still_closes_everything(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.store import database

    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    store = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(store).start()
    sub = await bus.subscribe("agent:dev", start="now")
    await store.write(r.create_task, "owner", "x", owner="dev")
    sub.ack((await asyncio.wait_for(sub.get(), timeout=5)).id)
    blocker = Store.open(db_path, AGENTS)
    blocker.conn.execute("BEGIN IMMEDIATE")  # the cursor flush cannot write
    try:
        await asyncio.wait_for(bus.close(), timeout=10)  # no exception, no hang
        assert bus._reader is None and bus._subs == []
    finally:
        blocker.conn.execute("ROLLBACK")
        blocker.close()
        await store.close()
