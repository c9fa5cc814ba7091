"""The bus: readers follow the event log by cursor into bounded asyncio queues.

- Each Subscription has its own position and a bounded queue. Its pump reads events after
  its position from SQLite and `await queue.put(...)`s them: a full queue slows that
  reader down; nothing is dropped, because the log, not the queue, is the source of truth.
- A named subscription is durable: what its consumer acknowledged is saved in `cursors`
  (batched), and a restart resumes there. Delivery is at least once; consumers skip ids
  they have seen (ids only grow, so "id <= last seen" is enough).
- One fetcher reads the tail of the log once per wake-up into a bounded ring shared by
  all subscriptions (decoded once); a reader that is caught up is served from the ring,
  a reader that fell behind it reads SQLite directly until it catches up.
- The fetcher wakes when this process commits (AsyncStore's commit listener) and when
  another process does: a poller checks `PRAGMA data_version` every `poll_interval` s.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

import aiosqlite

from agents.protocol import SYSTEM, Event
from agents.store import AsyncStore, EventFilter
from agents.store.queries import EVENT_COLUMNS, decode_rows
from agents.store.reducers import save_cursors

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
READ_BATCH = 256
RING_SIZE = 4096
RETRY_S = 0.2
CURSOR_FLUSH_S = 0.25

Start = Literal["cursor", "beginning", "now"] | int


class Subscription:
    """One reader. Iterate it (`async for event in sub`) or call `get()` + `ack()`."""

    def __init__(
        self, bus: Bus, name: str | None, flt: EventFilter, maxsize: int, position: int
    ) -> None:
        if maxsize <= 0:
            raise ValueError("a subscription queue needs a bound (maxsize > 0)")
        self.bus = bus
        self.name = name
        self.filter = flt
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.position = position  # last event id scanned into the queue
        self.acked = position  # last event id the consumer finished with
        self.saved = position  # last acked id written to `cursors`
        self.delivered = position  # last event id put into the queue
        self._wake = asyncio.Event()
        self._wake.set()
        self._pump: asyncio.Task[None] | None = None
        self._pending_ack: int | None = None

    def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name=f"bus-pump:{self.name or '-'}")

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # Clear before reading: a commit during the read sets it again, so no wake-up
            # is ever lost between "nothing new" and "wait".
            self._wake.clear()
            try:
                scanned, events, caught_up = await self.bus._next_events(self.position, self.filter)
            except Exception:  # busy beyond the timeout, or worse: say so, back off, go on
                log.exception("bus read for %s failed; retrying", self.name or "a reader")
                await asyncio.sleep(RETRY_S)
                continue
            for event in events:
                await self.queue.put(event)  # blocks while full: backpressure, no loss
                self.position = self.delivered = event.id
            # Everything up to `scanned` was looked at; skip the non-matching rest.
            self.position = max(self.position, scanned)
            if caught_up:
                await self._wake.wait()

    async def get(self) -> Event:
        return await self.queue.get()

    def ack(self, event_id: int) -> None:
        """The consumer is done with `event_id`; a durable cursor saves it soon after."""
        if event_id > self.acked:
            self.acked = event_id

    def durable_position(self) -> int:
        """What the saved cursor may say: the acked id; or, once the consumer has finished
        everything delivered, everything scanned, so that a filtered reader does not
        re-read what it skipped after a restart."""
        if self.queue.empty() and self.acked >= self.delivered:
            return max(self.acked, self.position)
        return self.acked

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        # Asking for the next event acknowledges the previous one.
        while True:
            if self._pending_ack is not None:
                self.ack(self._pending_ack)
            event = await self.get()
            self._pending_ack = event.id
            yield event

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        await self.bus._flush([self])
        self.bus._forget(self)


class Bus:
    """Fan-out of the event log to subscriptions, within one process."""

    def __init__(self, store: AsyncStore, *, poll_interval: float = 0.1) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._subs: list[Subscription] = []
        self._reader: aiosqlite.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # The shared tail: every event with floor < id <= head is in the ring, in order.
        self._ring: deque[Event] = deque()
        self._ring_ids: deque[int] = deque()
        self._floor = 0
        self._head = 0
        self._fetch_wake = asyncio.Event()

    async def start(self) -> Bus:
        self._reader = await aiosqlite.connect(self.store.path)
        await self._reader.execute("PRAGMA busy_timeout = 5000")
        row = await self._fetchone("SELECT COALESCE(MAX(id), 0) FROM events", ())
        self._floor = self._head = int(row[0]) if row else 0
        self.store.add_commit_listener(self._committed)
        self._tasks = [
            asyncio.create_task(self._fetch_tail(), name="bus-fetcher"),
            asyncio.create_task(self._poll_other_processes(), name="bus-poller"),
            asyncio.create_task(self._flush_cursors_forever(), name="bus-cursors"),
        ]
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.store.remove_commit_listener(self._committed)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            for sub in list(self._subs):
                try:
                    await sub.close()
                except Exception as err:  # its cursor stays where it was: re-delivery, no loss
                    log.warning("saving the cursor of %s failed: %s", sub.name, err)
                    self._forget(sub)
        finally:
            # Always: aiosqlite's thread is not a daemon and would keep the process alive.
            if self._reader is not None:
                await self._reader.close()
                self._reader = None

    async def subscribe(
        self,
        name: str | None = None,
        flt: EventFilter | None = None,
        *,
        maxsize: int = DEFAULT_QUEUE_SIZE,
        start: Start = "cursor",
    ) -> Subscription:
        """A reader. `name` makes it durable (resumes from its saved cursor). `start` for
        a reader without a saved cursor: "beginning", "now", or an event id to follow."""
        position, resumed = await self._start_position(name, start)
        sub = Subscription(self, name, flt or EventFilter(), maxsize, position)
        if name is not None and not resumed:
            sub.saved = -1  # a new durable reader: its first flush records where it started
        self._subs.append(sub)
        sub.start()
        return sub

    async def _start_position(self, name: str | None, start: Start) -> tuple[int, bool]:
        """(position, resumed): a durable reader's saved cursor wins over `start`."""
        if name is not None:
            row = await self._fetchone("SELECT last_event_id FROM cursors WHERE name = ?", (name,))
            if row is not None:
                return int(row[0]), True
        if isinstance(start, int):
            return start, False
        if start == "now":
            row = await self._fetchone("SELECT COALESCE(MAX(id), 0) FROM events", ())
            # The reader connection may still hold an older snapshot (a statement of the
            # fetcher's open on it); this process's own commits are in _head already.
            return max(int(row[0]) if row else 0, self._head), False
        return 0, False

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def _committed(self, events: list[Event]) -> None:
        """This process committed `events`: straight into the ring when they follow on
        from its head (no read needed); after a gap (another process wrote in between)
        the fetcher reads SQLite."""
        fresh = [e for e in events if e.id > self._head]
        if fresh and fresh[0].id == self._head + 1:
            self._append(fresh)
        elif fresh:
            self._fetch_wake.set()

    def _append(self, events: list[Event]) -> None:
        for event in events:
            if len(self._ring) == RING_SIZE:
                self._ring.popleft()
                self._floor = self._ring_ids.popleft()
            self._ring.append(event)
            self._ring_ids.append(event.id)
        self._head = events[-1].id
        for sub in self._subs:
            sub.wake()

    async def _fetch_tail(self) -> None:
        """Read new events once for everyone, then wake the subscriptions."""
        while True:
            self._fetch_wake.clear()
            try:
                scanned, events, caught_up = await self._read_after(
                    self._head, EventFilter(), limit=RING_SIZE
                )
            except Exception:  # as in the pumps: a stalled fetcher would stall every reader
                log.exception("bus fetch failed; retrying")
                await asyncio.sleep(RETRY_S)
                continue
            # The commit path may have appended some of these while we were reading.
            fresh = [e for e in events if e.id > self._head]
            if fresh:
                self._append(fresh)
            if scanned > self._head:
                self._head = scanned  # past events that could not be decoded
                for sub in self._subs:
                    sub.wake()
            if caught_up:
                await self._fetch_wake.wait()

    async def _next_events(self, after: int, flt: EventFilter) -> tuple[int, list[Event], bool]:
        """(scanned, events, caught_up) for a reader at `after`: from the ring when it is
        caught up, else from SQLite."""
        if after < self._floor:
            return await self._read_after(after, flt)
        start = bisect.bisect_right(self._ring_ids, after)
        found: list[Event] = []
        for i in range(start, len(self._ring)):
            event = self._ring[i]
            if flt.matches(event):
                found.append(event)
                if len(found) == READ_BATCH:
                    return event.id, found, False
        return self._head, found, True

    async def _fetchone(self, sql: str, params: tuple[object, ...]) -> tuple | None:
        assert self._reader is not None, "Bus.start() first"
        async with self._reader.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _read_after(
        self, after: int, flt: EventFilter, limit: int = READ_BATCH
    ) -> tuple[int, list[Event], bool]:
        """(scanned, events, caught_up): every matching event in (after, scanned], at most
        `limit` of them, undecodable ones left out. Reading the log's head first bounds the
        scan, so a filtered reader can skip ahead past events it does not want; caught_up
        says `scanned` is that head. `scanned` comes from the rows read, not the events
        decoded, so a skipped event never makes a reader jump over the rest of a batch."""
        assert self._reader is not None, "Bus.start() first"
        row = await self._fetchone("SELECT COALESCE(MAX(id), 0) FROM events", ())
        head = int(row[0]) if row else 0
        if head <= after:
            return head, [], True
        where, params = flt.sql()
        async with self._reader.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? AND id <= ? AND {where} "
            "ORDER BY id LIMIT ?",
            (after, head, *params, limit),
        ) as cur:
            found = list(await cur.fetchall())
        full = len(found) == limit
        scanned = int(found[-1][0]) if full else head
        return scanned, decode_rows(found), not full

    async def _poll_other_processes(self) -> None:
        """Other processes' commits (the CLI in another terminal) change data_version."""
        seen: int | None = None
        while True:
            try:
                row = await self._fetchone("PRAGMA data_version", ())
            except Exception as err:  # locked or worse: try again next tick
                log.warning("bus poll failed: %s; retrying", err)
            else:
                version = row[0] if row else 0
                if seen is not None and version != seen:
                    self._fetch_wake.set()
                seen = version
            await asyncio.sleep(self.poll_interval)

    async def flush_cursors(self) -> None:
        """Save acknowledged positions of durable subscriptions, in one transaction."""
        await self._flush(self._subs)

    async def _flush(self, subs: list[Subscription]) -> None:
        moved = {
            s.name: s.durable_position() for s in subs if s.name and s.durable_position() > s.saved
        }
        if not moved:
            return
        await self.store.write(save_cursors, SYSTEM, moved)
        for sub in subs:
            if sub.name in moved:
                sub.saved = max(sub.saved, moved[sub.name])

    async def _flush_cursors_forever(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_FLUSH_S)
            try:
                await self.flush_cursors()
            except Exception:  # a busy database: retry on the next tick
                log.warning("saving bus cursors failed; retrying", exc_info=True)
