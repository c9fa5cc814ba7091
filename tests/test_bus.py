"""The bus against a real SQLite file: backpressure without loss, filters, durable cursors."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from agents import bus as bus_mod
from agents.bus import Bus, Subscription
from agents.protocol import OWNER, PROTOCOL_VERSION, SYSTEM, Event
from agents.store import AsyncStore, EventFilter, Store, queries
from agents.store.reducers import (
    create_task,
    post_message,
    send_direct,
    set_agent_status,
    set_task_status,
    write_memory,
)
from tests.conftest import AGENTS

WAIT_S = 10.0  # generous: "within N seconds", never a timing assertion


@pytest.fixture
async def bus(astore: AsyncStore) -> AsyncIterator[Bus]:
    b = await Bus(astore, poll_interval=0.05).start()
    try:
        yield b
    finally:
        await b.close()


async def all_events(astore: AsyncStore, after: int = 0) -> list[Event]:
    return await astore.read(queries.events_after, after, 1_000_000)


async def head(astore: AsyncStore) -> int:
    return await astore.read(queries.last_event_id)


async def take(sub: Subscription, n: int) -> list[Event]:
    """n events through get() (no ack), within WAIT_S."""

    async def go() -> list[Event]:
        return [await sub.get() for _ in range(n)]

    return await asyncio.wait_for(go(), WAIT_S)


async def assert_quiet(sub: Subscription, seconds: float = 0.3) -> None:
    """Nothing more arrives for a short while (used only to assert absence)."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.get(), seconds)


def dedup(events: list[Event]) -> list[int]:
    """The consumer's de-duplication: ids only grow, so drop anything <= the last seen."""
    out: list[int] = []
    for e in events:
        if not out or e.id > out[-1]:
            out.append(e.id)
    return out


async def mixed_traffic(astore: AsyncStore) -> None:
    """A bit of everything: tasks for various owners, status changes, messages, DMs."""
    for i, agent in enumerate(AGENTS):
        t = await astore.write(create_task, OWNER, f"task {i}", owner=agent)
        await astore.write(set_task_status, agent, t.id, "active")
        await astore.write(set_agent_status, agent, agent, "acting", task_id=t.id)
        await astore.write(post_message, agent, "general", f"hello from {agent}")
        await astore.write(send_direct, agent, AGENTS[(i + 1) % len(AGENTS)], "psst")
        await astore.write(write_memory, agent, f"note {i}")
    await astore.write(create_task, "lead", "unassigned from lead")


# --- backpressure ----------------------------------------------------------------------


@pytest.mark.parametrize("ring_size", [bus_mod.RING_SIZE, 16], ids=["ring", "behind-ring"])
async def test_fast_producer_slow_consumers_get_everything_exactly_once_in_order(
    astore: AsyncStore, monkeypatch: pytest.MonkeyPatch, ring_size: int
) -> None:
    """300 reducer calls as fast as they go; three readers with queues of 2, 3 and 4 that
    sleep on every event. With a ring of 16 they fall behind it and read SQLite."""
    monkeypatch.setattr(bus_mod, "RING_SIZE", ring_size)
    n = 300
    bus = await Bus(astore, poll_interval=0.05).start()
    try:
        start = await head(astore)
        subs = [await bus.subscribe(f"slow:{m}", maxsize=m, start="now") for m in (2, 3, 4)]
        received: dict[int, list[Event]] = {m: [] for m in (2, 3, 4)}
        max_seen: dict[int, int] = {m: 0 for m in (2, 3, 4)}
        done = asyncio.Event()

        async def consume(sub: Subscription, m: int) -> None:
            async for event in sub:
                assert sub.queue.qsize() <= m
                received[m].append(event)
                await asyncio.sleep(0.002 if len(received[m]) % 7 else 0.02)  # slow
                if done.is_set() and received[m][-1].id >= last:
                    return

        last = 10**9
        consumers = [asyncio.create_task(consume(s, s.queue.maxsize)) for s in subs]
        for i in range(n):
            await astore.write(create_task, OWNER, f"burst {i}", owner=AGENTS[i % len(AGENTS)])
            for s in subs:
                assert s.queue.qsize() <= s.queue.maxsize
                max_seen[s.queue.maxsize] = max(max_seen[s.queue.maxsize], s.queue.qsize())
        last = await head(astore)
        done.set()
        await asyncio.wait_for(asyncio.gather(*consumers), 60)

        expected = [e.id for e in await all_events(astore, start)]
        assert len(expected) == n
        for m, events in received.items():
            assert dedup(events) == expected, f"queue {m}"
            assert [e.id for e in events] == sorted(e.id for e in events), "in order"
            assert max_seen[m] <= m
        # The queues really were full at times: the producer outran the consumers.
        assert any(v == m for m, v in max_seen.items()), max_seen
    finally:
        await bus.close()


async def test_a_full_queue_holds_the_pump_back(astore: AsyncStore, bus: Bus) -> None:
    sub = await bus.subscribe(maxsize=3, start="now")
    for i in range(20):
        await astore.write(create_task, OWNER, f"t{i}")
    got = await take(sub, 3)  # frees the queue three times over
    await asyncio.wait_for(_until(lambda: sub.queue.full()), WAIT_S)
    assert sub.queue.qsize() == 3
    # The pump stopped at what it could put: it has not scanned past the queue's content.
    assert sub.position <= got[-1].id + 3 + 1
    rest = await take(sub, 17)
    assert dedup(got + rest) == [e.id for e in await all_events(astore, got[0].id - 1)]


@pytest.mark.parametrize("maxsize", [0, -1])
async def test_an_unbounded_queue_is_refused(bus: Bus, maxsize: int) -> None:
    with pytest.raises(ValueError, match="bound"):
        await bus.subscribe(maxsize=maxsize)


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll a condition no event signals (wrap in asyncio.wait_for)."""
    while not predicate():  # noqa: ASYNC110 - polling state that has no event to wait on
        await asyncio.sleep(0.01)


# --- filters ---------------------------------------------------------------------------


FILTERS = {
    "kinds": EventFilter(kinds=["task.created", "message.posted"]),
    "actor": EventFilter(actor="dev"),
    "subject": EventFilter(subject_prefix="task:"),
    "recipient": EventFilter(recipient="review"),
    "combined": EventFilter(kinds=["message.posted"], actor="ops", recipient="scribe"),
    "none": EventFilter(kinds=["rule.removed"]),
}


async def test_filtered_subscriptions_get_exactly_the_matching_events(astore: AsyncStore, bus: Bus) -> None:
    start = await head(astore)
    subs = {name: await bus.subscribe(flt=f, start="now", maxsize=4) for name, f in FILTERS.items()}
    everyone = await bus.subscribe(start="now", maxsize=4)
    got: dict[str, list[Event]] = {name: [] for name in [*FILTERS, "all"]}

    async def consume(name: str, sub: Subscription) -> None:
        async for event in sub:
            got[name].append(event)

    tasks = [asyncio.create_task(consume(n, s)) for n, s in [*subs.items(), ("all", everyone)]]
    try:
        await mixed_traffic(astore)
        everything = await all_events(astore, start)
        await asyncio.wait_for(_until(lambda: len(got["all"]) >= len(everything)), WAIT_S)
        # The filtered readers are done once each has scanned past the last event and its
        # consumer has taken everything it was given (the append follows the get in one step).
        last = everything[-1].id
        await asyncio.wait_for(_until(lambda: all(s.position >= last and s.queue.empty()
                                                  for s in subs.values())), WAIT_S)
        for name, flt in FILTERS.items():
            expected = [e.id for e in everything if flt.matches(e)]
            assert [e.id for e in got[name]] == expected, name
        # The filters select something real (the test would be vacuous otherwise).
        assert all(got[name] for name in FILTERS if name != "none")
        assert got["none"] == []
        assert all(e.recipient == "review" for e in got["recipient"])
        assert {e.kind for e in got["kinds"]} == {"task.created", "message.posted"}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_filters_read_from_sqlite_match_the_in_memory_filter(astore: AsyncStore, bus: Bus) -> None:
    """A reader that starts at the beginning reads SQLite (behind the ring); its filter is
    SQL. It must agree with EventFilter.matches."""
    await mixed_traffic(astore)
    everything = await all_events(astore)
    for name, flt in FILTERS.items():
        expected = [e.id for e in everything if flt.matches(e)]
        sub = await bus.subscribe(flt=flt, start="beginning", maxsize=4)
        got = await take(sub, len(expected))
        assert [e.id for e in got] == expected, name
        await assert_quiet(sub, 0.1)
        await sub.close()


async def test_subject_prefix_is_a_prefix_not_a_pattern(astore: AsyncStore, bus: Bus) -> None:
    ids = [(await astore.write(create_task, OWNER, f"t{i}")).id for i in range(12)]
    one = await bus.subscribe(flt=EventFilter(subject_prefix=f"task:{ids[0]}"), start="beginning")
    evs = await take(one, 1)
    assert evs[0].subject == f"task:{ids[0]}"
    # Glob metacharacters are literal.
    odd = await bus.subscribe(flt=EventFilter(subject_prefix="task:[1"), start="beginning")
    await assert_quiet(odd, 0.2)


# --- start positions -------------------------------------------------------------------


async def test_start_now_beginning_and_id(astore: AsyncStore, bus: Bus) -> None:
    for i in range(3):
        await astore.write(create_task, OWNER, f"old {i}")
    old = await all_events(astore)
    now = await bus.subscribe(start="now")
    beginning = await bus.subscribe(start="beginning")
    from_id = await bus.subscribe(start=old[-2].id)
    await assert_quiet(now, 0.2)
    assert [e.id for e in await take(beginning, len(old))] == [e.id for e in old]
    assert [e.id for e in await take(from_id, 1)] == [old[-1].id]
    new = await astore.write(create_task, OWNER, "new")
    for sub in (now, beginning, from_id):
        [e] = await take(sub, 1)
        assert e.subject == f"task:{new.id}"


async def test_unnamed_subscription_starts_at_the_beginning_by_default(astore: AsyncStore, bus: Bus) -> None:
    await astore.write(create_task, OWNER, "x")
    sub = await bus.subscribe()
    first = await take(sub, 1)
    assert first[0].id == 1


# --- durable cursors -------------------------------------------------------------------


async def test_durable_cursor_resumes_after_the_acked_event(astore: AsyncStore) -> None:
    for i in range(10):
        await astore.write(create_task, OWNER, f"t{i}")
    expected = [e.id for e in await all_events(astore)]

    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe("agent:dev", start="beginning", maxsize=2)
        seen: list[int] = []
        async for event in sub:  # asking for the next event acks the previous one
            seen.append(event.id)
            if len(seen) == 5:
                break
        await sub.close()  # flushes the cursor
        # The fifth was handed out but never acked (the next was never requested).
        assert await astore.read(queries.cursor, "agent:dev") == seen[3]
    finally:
        await bus.close()

    bus = await Bus(astore).start()  # a restart
    try:
        sub = await bus.subscribe("agent:dev", maxsize=2)
        rest = await take(sub, len(expected) - 4)
        # At most the unacked one is delivered again, nothing is skipped.
        assert [e.id for e in rest] == expected[4:]
        assert dedup([*[e for e in await all_events(astore) if e.id in seen], *rest]) == expected
        await assert_quiet(sub, 0.2)
    finally:
        await bus.close()


async def test_get_and_ack_and_close_flushes_every_durable_cursor(astore: AsyncStore) -> None:
    for i in range(6):
        await astore.write(create_task, OWNER, f"t{i}")
    bus = await Bus(astore).start()
    try:
        a = await bus.subscribe("a", start="beginning")
        b = await bus.subscribe("b", start="beginning")
        anonymous = await bus.subscribe(start="beginning")
        ea = await take(a, 3)
        eb = await take(b, 6)
        await take(anonymous, 6)
        a.ack(ea[1].id)
        b.ack(eb[-1].id)
        b.ack(eb[0].id)  # acks never move back
        anonymous.ack(eb[-1].id)
    finally:
        await bus.close()
    assert await astore.read(queries.cursor, "a") == ea[1].id
    assert await astore.read(queries.cursor, "b") == eb[-1].id
    names = await astore.read(lambda c: [r[0] for r in c.execute("SELECT name FROM cursors")])
    assert sorted(names) == ["a", "b"]


async def test_cursors_are_flushed_periodically_without_close(astore: AsyncStore, bus: Bus) -> None:
    await astore.write(create_task, OWNER, "x")
    sub = await bus.subscribe("periodic", start="beginning")
    events = await take(sub, 3)
    sub.ack(events[-1].id)

    async def saved() -> None:
        for _ in range(int(WAIT_S / 0.05)):
            if await astore.read(queries.cursor, "periodic") == events[-1].id:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the cursor was not saved")

    await asyncio.wait_for(saved(), WAIT_S * 2)


async def test_a_named_reader_that_started_now_resumes_from_its_cursor(astore: AsyncStore) -> None:
    """`start` applies to a reader WITHOUT a saved cursor. A durable reader created with
    start="now" must, after a restart, get what was written while it was down."""
    await astore.write(create_task, OWNER, "before the reader existed")
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe("instance:approvals", start="now")
        first = await astore.write(create_task, OWNER, "seen")
        async for event in sub:
            assert event.subject == f"task:{first.id}"
            break
        sub.ack(event.id)
    finally:
        await bus.close()
    missed = await astore.write(create_task, OWNER, "written while the reader was down")
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe("instance:approvals", start="now")
        [event] = await take(sub, 1)
        assert event.subject == f"task:{missed.id}"
    finally:
        await bus.close()


async def test_a_named_reader_that_never_saw_an_event_keeps_its_start(astore: AsyncStore) -> None:
    """A durable reader that started "now" and was closed before anything arrived must not
    lose what is written before it comes back."""
    bus = await Bus(astore).start()
    try:
        await bus.subscribe("quiet", start="now")
    finally:
        await bus.close()
    missed = await astore.write(create_task, OWNER, "while away")
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe("quiet", start="now")
        [event] = await take(sub, 1)
        assert event.subject == f"task:{missed.id}"
    finally:
        await bus.close()


# --- other writers and odd events ------------------------------------------------------


async def test_a_write_on_another_connection_is_noticed(astore: AsyncStore, bus: Bus, db_path: Path) -> None:
    """No commit listener fires for another connection (the CLI in another terminal): the
    data_version poller must notice it."""
    sub = await bus.subscribe(start="now")
    other = await asyncio.to_thread(Store.open, db_path, AGENTS)
    try:
        t = await asyncio.to_thread(other.write, create_task, OWNER, "from elsewhere")
        [event] = await take(sub, 1)
        assert event.subject == f"task:{t.id}"
    finally:
        await asyncio.to_thread(other.close)


def _future_event(db_path: Path, n: int = 1) -> None:
    """Append events written by a newer agentdeck (protocol version + 1)."""
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION + 1, {"type": "future.thing", "x": 1}])
    conn = sqlite3.connect(db_path)
    try:
        for _ in range(n):
            conn.execute(
                "INSERT INTO events (ts, kind, actor, subject, payload) VALUES (0, 'future.thing', ?, '', ?)",
                (SYSTEM, blob))
        conn.commit()
    finally:
        conn.close()


async def _write_tasks(astore: AsyncStore, n: int) -> None:
    for i in range(n):
        await astore.write(create_task, OWNER, f"t{i}")


async def test_undecodable_events_are_skipped_without_losing_their_neighbours_from_sqlite(
    astore: AsyncStore, db_path: Path
) -> None:
    """A reader far behind reads SQLite in batches; an event of a newer protocol in the
    first batch must not make it jump over the rest of the log."""
    await _write_tasks(astore, 3)
    _future_event(db_path)
    await _write_tasks(astore, bus_mod.READ_BATCH + 40)
    _future_event(db_path, 2)
    good = [e.id for e in await _decodable(db_path)]
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe(start="beginning", maxsize=8)
        got = await take(sub, len(good))
        assert [e.id for e in got] == good
        await assert_quiet(sub, 0.2)
        await astore.write(create_task, OWNER, "after")
        [after] = await take(sub, 1)
        assert after.id == await head(astore)
    finally:
        await bus.close()


async def test_undecodable_events_are_skipped_from_the_ring(
    astore: AsyncStore, bus: Bus, db_path: Path
) -> None:
    start = await head(astore)
    sub = await bus.subscribe(start="now", maxsize=4)
    await _write_tasks(astore, 2)
    _future_event(db_path)
    await _write_tasks(astore, 2)
    _future_event(db_path)  # the newest event is one we cannot read
    good = [e.id for e in await _decodable(db_path) if e.id > start]
    got = await take(sub, 4)
    assert [e.id for e in got] == good[-4:]
    await _write_tasks(astore, 1)
    [last] = await take(sub, 1)
    assert last.id == await head(astore)


async def _decodable(db_path: Path) -> list[Event]:
    def read() -> list[Event]:
        conn = sqlite3.connect(db_path)
        try:
            out = []
            for r in conn.execute(f"SELECT {queries.EVENT_COLUMNS} FROM events ORDER BY id"):
                try:
                    out.append(queries.event_from_row(r))
                except Exception:
                    continue
            return out
        finally:
            conn.close()

    return await asyncio.to_thread(read)


async def test_close_is_idempotent_and_stops_pumps(astore: AsyncStore) -> None:
    bus = await Bus(astore).start()
    sub = await bus.subscribe(maxsize=1, start="beginning")
    await _write_tasks(astore, 5)  # the pump is now blocked on a full queue
    await asyncio.wait_for(_until(lambda: sub.queue.full()), WAIT_S)
    await asyncio.wait_for(bus.close(), WAIT_S)
    await bus.close()
    assert sub._pump is None
