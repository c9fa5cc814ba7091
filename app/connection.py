"""How the TUI reaches the crew: embedded (it runs the host in its own loop: the crew,
the engine, the live views) or attached (the home of an instance already running
headless: the store and the bus, the meter from the instance's heartbeat)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.bus import Bus
from agents.config import Config
from agents.crew.live import LiveView
from agents.inference import Backend, MeterSnapshot
from agents.runtime import Host
from agents.runtime.deck import DeckView, read_deck
from agents.store import AsyncStore


class Connection:
    """What the app reads: `store` and `bus` once `ready` is set; `deck()` on its timer."""

    embedded = False

    def __init__(self, db_path: Path, config: Config) -> None:
        self.db_path = db_path
        self.config = config
        self.agents = list(config.enabled_agents())
        self.store: AsyncStore | None = None
        self.bus: Bus | None = None
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()  # set once run() has let go of everything it opened
        self.progress: float | None = None  # model loading, 0..1, while embedded and loading

    async def run(self) -> None:
        """Connect, then hold the connection until cancelled."""
        raise NotImplementedError

    async def deck(self) -> DeckView:
        assert self.store is not None
        return await read_deck(self.store, self.agents, live=self._live(), meter=self._meter())

    def _live(self) -> dict[str, LiveView] | None:
        return None

    def _meter(self) -> MeterSnapshot | None:
        """The meter in hand (embedded: the backend's); None: the heartbeat's."""
        return None


class Embedded(Connection):
    """The TUI is the front end of the host: the crew runs in this process."""

    embedded = True

    def __init__(self, db_path: Path, config: Config, backend: Backend) -> None:
        super().__init__(db_path, config)
        self.backend = backend
        self.host: Host | None = None

    async def run(self) -> None:
        host = Host(self.db_path, self.config, backend=self.backend, crew=True, approvals="cli")
        self.host = host
        try:
            async with host:
                self.store, self.bus = host.store, host.bus
                self.ready.set()
                await host.stopping.wait()
        finally:
            self.closed.set()

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()

    def _live(self) -> dict[str, LiveView] | None:
        crew = self.host.crew if self.host is not None else None
        return {name: crew.live(name) for name in crew.agents} if crew is not None else None

    def _meter(self) -> MeterSnapshot | None:
        return self.backend.snapshot()


class Attached(Connection):
    """The TUI on the home of an instance running headless: decisions and messages go
    through the reducers; the instance's crew picks them up from the store."""

    async def run(self) -> None:
        store = AsyncStore(self.db_path, self.agents)
        await store.open()
        try:
            self.store = store
            self.bus = Bus(store)  # before start(): a cancel mid-start still closes its reader
            await self.bus.start()
            self.ready.set()
            await asyncio.Event().wait()  # until cancelled
        finally:
            try:
                if self.bus is not None:
                    await self.bus.close()
                await store.close()
            finally:
                self.closed.set()
