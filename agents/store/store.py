"""Store: the one SQLite database. `write` runs a reducer in ONE transaction; reads are
plain queries. AsyncStore runs the same calls on one dedicated thread so the event loop
never blocks on SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from agents.protocol import SYSTEM, Event
from agents.store.database import open_database
from agents.store.tx import Tx

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_CHANNELS = ("general", "agent-logs")


class Store:
    """Synchronous access, for the CLI and for AsyncStore's thread. Not thread-safe: one
    thread uses one Store."""

    def __init__(self, conn: sqlite3.Connection, path: Path, agents: Iterable[str]) -> None:
        self.conn = conn
        self.path = path
        self.agents = frozenset(agents)
        # Called with the committed events after each commit that appended any.
        self.on_commit: Callable[[list[Event]], None] | None = None

    @classmethod
    def open(cls, path: Path | str, agents: Iterable[str]) -> Store:
        path = Path(path)
        store = cls(open_database(path), path, agents)
        store._join_default_channels()
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def write(self, reducer: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `reducer(tx, *args, **kwargs)` in one IMMEDIATE transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        tx = Tx(conn, self.agents, time.time())
        try:
            result = reducer(tx, *args, **kwargs)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if tx.events and self.on_commit is not None:
            self.on_commit(tx.events)
        return result

    def read(self, query: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
             **kwargs: P.kwargs) -> T:
        return query(self.conn, *args, **kwargs)

    def _join_default_channels(self) -> None:
        """Configured agents are members (role `agent`) of #general and #agent-logs."""
        missing = [
            (channel, agent)
            for channel in DEFAULT_CHANNELS
            for agent in sorted(self.agents)
            if not self.conn.execute(
                "SELECT 1 FROM channel_members m JOIN channels c ON c.id = m.channel_id "
                "WHERE c.name = ? AND m.member = ?", (channel, agent),
            ).fetchone()
        ]
        if not missing:
            return
        from agents.store.reducers.channels import add_member

        def join_all(tx: Tx) -> None:
            for channel, agent in missing:
                if tx.one("SELECT 1 FROM channels WHERE name = ?", (channel,)):
                    add_member(tx, SYSTEM, channel, agent, "agent")

        self.write(join_all)


class AsyncStore:
    """The Store on one dedicated thread. Every call is one hop to that thread."""

    def __init__(self, path: Path | str, agents: Iterable[str]) -> None:
        self.path = Path(path)
        self._agents = frozenset(agents)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentdeck-store")
        self._store: Store | None = None
        self._commit_listeners: list[Callable[[list[Event]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # guards _commit_listeners across threads

    async def open(self) -> AsyncStore:
        self._loop = asyncio.get_running_loop()
        try:
            self._store = await self._run(Store.open, self.path, self._agents)
        except BaseException:
            self._executor.shutdown(wait=False)  # don't leave the thread behind
            raise
        self._store.on_commit = self._committed
        return self

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await self._run(store.close)
        self._executor.shutdown(wait=True)

    def add_commit_listener(self, listener: Callable[[list[Event]], None]) -> None:
        """`listener(events)` is called on the event loop after each commit, in commit
        order, with the events that commit appended."""
        with self._lock:
            self._commit_listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[list[Event]], None]) -> None:
        with self._lock:
            if listener in self._commit_listeners:
                self._commit_listeners.remove(listener)

    def _committed(self, events: list[Event]) -> None:
        # Runs on the store thread, right after COMMIT: hand over to the loop.
        assert self._loop is not None
        with self._lock:
            listeners = list(self._commit_listeners)
        for listener in listeners:
            self._loop.call_soon_threadsafe(listener, events)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("AsyncStore is not open")
        return self._store

    @property
    def agents(self) -> frozenset[str]:
        return self._agents

    async def write(self, reducer: Callable[Concatenate[Tx, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        return await self._run(self.store.write, reducer, *args, **kwargs)

    async def read(self, query: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        return await self._run(self.store.read, query, *args, **kwargs)
