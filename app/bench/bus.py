"""`agentdeck bench bus`: durable events/s and publish -> delivery latency through the
reducers and the bus with several subscribers, side by side with raw sqlite3 inserting
the same rows in batched transactions. Figures, not assertions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from agents.bus import Bus, Subscription
from agents.config import DEFAULT_AGENTS
from agents.protocol import OWNER, Task, TaskCreated, encode_payload
from agents.store import AsyncStore
from agents.store.database import open_database
from agents.store.reducers import create_task
from app.args import at_least_one
from app.bench import harness
from app.context import Context

HELP = "durable events/s and latency vs raw sqlite3"


class BusFigures(msgspec.Struct, kw_only=True):
    events: int
    subscribers: int
    queue_size: int
    bus_events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    raw_events_per_s: float
    raw_batch: int
    raw_over_bus: float
    raw_unbatched_events_per_s: float  # one transaction per event, as each reducer call is


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One run, no model: --json is the only common option."""
    p.add_argument("--events", type=at_least_one, default=5000, help="events to publish (default 5000)")
    p.add_argument("--subscribers", type=at_least_one, default=6, help="bus readers (default 6)")
    p.add_argument("--queue", type=at_least_one, default=64, help="each reader's queue bound (default 64)")
    p.add_argument("--batch", type=at_least_one, default=100, help="raw sqlite3 rows per transaction")
    harness.add_common(p)


async def _consume(sub: Subscription, expected: int, sent_at: dict[str, float],
                   latencies: list[float]) -> None:
    seen = 0
    last = 0
    async for event in sub:
        if event.id <= last:  # at-least-once: skip a redelivery
            continue
        last = event.id
        if isinstance(event.payload, TaskCreated):
            latencies.append(time.perf_counter() - sent_at[event.payload.task.title])
            seen += 1
            if seen == expected:
                return


async def _bench_bus(db: Path, events: int, subscribers: int, queue: int) -> tuple[float, list[float]]:
    agents = list(DEFAULT_AGENTS)
    store = await AsyncStore(db, agents).open()
    bus = await Bus(store).start()
    try:
        subs = [await bus.subscribe(f"bench:{i}", maxsize=queue, start="now") for i in range(subscribers)]
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        consumers = [asyncio.create_task(_consume(s, events, sent_at, latencies)) for s in subs]
        start = time.perf_counter()
        for i in range(events):
            # Keyed by title: the commit may wake a consumer before write() returns the id.
            title = f"bench task {i}"
            sent_at[title] = time.perf_counter()
            await store.write(create_task, OWNER, title, owner=agents[i % len(agents)])
        await asyncio.gather(*consumers)
        elapsed = time.perf_counter() - start
        return events / elapsed, latencies
    finally:
        await bus.close()
        await store.close()


def _bench_raw(db: Path, events: int, batch: int) -> float:
    """The same rows (a task and its event) with plain sqlite3, `batch` per transaction."""
    conn = open_database(db)
    conn.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.perf_counter()
    for first in range(0, events, batch):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(first, min(first + batch, events)):
            now = time.time()
            cur = conn.execute(
                "INSERT INTO tasks (job_id, owner, created_by, title, status, priority, created_at, "
                "updated_at) VALUES (0, 'dev', 'owner', ?, 'queued', 1, ?, ?)",
                (f"bench task {i}", now, now),
            )
            task_id = cur.lastrowid
            conn.execute("UPDATE tasks SET job_id = ? WHERE id = ?", (task_id, task_id))
            task = Task(
                id=task_id or 0, parent_id=None, job_id=task_id or 0, owner="dev", created_by="owner",
                title=f"bench task {i}", body="", status="queued", priority=1, result=None,
                attempts=0, deadline=None, created_at=now, updated_at=now,
            )
            conn.execute(
                "INSERT INTO events (ts, kind, actor, subject, recipient, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now, "task.created", "owner", f"task:{task_id}", "dev",
                 encode_payload(TaskCreated(task=task))),
            )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return events / elapsed


def measure(events: int, subscribers: int, queue: int, batch: int) -> BusFigures:
    with tempfile.TemporaryDirectory(prefix="agentdeck-bench-") as tmp:
        bus_rate, latencies = asyncio.run(_bench_bus(Path(tmp) / "bus.db", events, subscribers, queue))
        raw_rate = _bench_raw(Path(tmp) / "raw.db", events, batch)
        raw_single = _bench_raw(Path(tmp) / "raw1.db", events, 1)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return BusFigures(
        events=events, subscribers=subscribers, queue_size=queue,
        bus_events_per_s=round(bus_rate, 1),
        latency_p50_ms=round(statistics.median(latencies) * 1000, 3),
        latency_p99_ms=round(p99 * 1000, 3),
        raw_events_per_s=round(raw_rate, 1), raw_batch=batch,
        raw_over_bus=round(raw_rate / bus_rate, 2),
        raw_unbatched_events_per_s=round(raw_single, 1),
    )


def run(_ctx: Context, args: argparse.Namespace) -> int:
    if args.events < 1 or args.subscribers < 1 or args.queue < 1 or args.batch < 1:
        from agents.errors import InvalidArgument

        raise InvalidArgument("--events, --subscribers, --queue and --batch must be >= 1", exit_code=2)
    f = measure(args.events, args.subscribers, args.queue, args.batch)
    if args.json:
        print(json.dumps(msgspec.to_builtins(f)))
        return 0
    print(f"bus: {f.events} durable events through reducers, {f.subscribers} subscribers "
          f"(queues of {f.queue_size}), one run")
    print(f"  agentdeck reducers + bus   {f.bus_events_per_s:>10,.0f} events/s   "
          f"latency p50 {f.latency_p50_ms:.2f} ms  p99 {f.latency_p99_ms:.2f} ms")
    print(f"  raw sqlite3, {f.raw_batch}/txn       {f.raw_events_per_s:>10,.0f} events/s   (no readers)")
    print(f"  raw sqlite3, 1/txn         {f.raw_unbatched_events_per_s:>10,.0f} events/s   "
          "(no readers; one commit per event, like one reducer call)")
    print(f"  ratio raw ({f.raw_batch}/txn) / agentdeck {f.raw_over_bus:>6.2f}x")
    return 0
