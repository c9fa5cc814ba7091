"""How the TUI reaches the crew: embedded (it runs the host in its own loop: the crew,
the engine, the live views) or attached (the home of an instance already running
headless: the store and the bus, the meter from the instance's heartbeat).

The app acts on the crew only through the connection's control surface: pause, resume,
cancel, decide, approve MCP tools, restore (undo or redo a task's changes to the files),
stop. What only
the crew in this process can do (pause a loop) raises NotHere when attached, with a
sentence the app shows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.bus import Bus
from agents.checkpoints.undo import Outcome, Plan, RestoreKind, restore
from agents.config import Config
from agents.crew import Crew
from agents.crew.live import LiveView
from agents.errors import AgentdeckError, InvalidArgument
from agents.inference import Backend, MeterSnapshot
from agents.protocol import OWNER, Approval, ApprovalScope, McpTool
from agents.runtime import Host
from agents.runtime.deck import DeckView, read_deck
from agents.store import AsyncStore
from agents.store import reducers as r
from agents.store.tx import Tx


class NotHere(AgentdeckError):
    """What this connection cannot do (an attached cockpit pausing another process's loop)."""


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

    # --- the control surface ---

    def stop(self) -> None:
        """Let go: run() ends, closing what it opened (`closed` is set then)."""
        raise NotImplementedError

    def paused(self, agent: str) -> bool:
        """Whether the agent was paused from here (only a crew in this process can be)."""
        return False

    async def pause(self, agent: str) -> None:
        raise NotHere(f"cannot pause {agent} from an attached cockpit: its loop runs in the "
                      "headless instance; run the crew in the cockpit (`agentdeck tui`) to pause it")

    async def resume(self, agent: str) -> None:
        raise NotHere(f"cannot resume {agent} from an attached cockpit: its loop runs in the "
                      "headless instance")

    async def cancel(self, task_id: int) -> list[int]:
        """Cancel the task and its unfinished subtasks, through the reducer: the crew that
        works them (here or in the instance) stops them as the change reaches it."""
        return await self._store().write(r.cancel_task, OWNER, task_id)

    async def decide(self, approval_id: int, approve: bool, scope: ApprovalScope = "once") -> Approval:
        """The person's decision, through the reducer; the waiting agent reads it from the store."""
        return await self._store().write(r.decide_approval, OWNER, approval_id, approve, scope=scope)

    async def approve_mcp(self, server: str, shown: list[McpTool]) -> list[McpTool]:
        """The person approves `server`'s tools as they were shown; refused (nothing
        approved) if one changed again since. The host reloads its pins on the event."""
        digests = {t.name: t.schema_hash for t in shown}
        return await self._store().write(_approve_as_shown, OWNER, server, digests)

    async def restore(self, home: Path, task_id: int, kind: RestoreKind, *,
                      force: bool = False) -> tuple[Plan, Outcome]:
        """Undo (or redo) the task's changes to the files, as `agentdeck undo` does, from
        this process for both: refused (UndoRefused, nothing changed) while the task is
        live or where a file changed since, unless `force`."""
        store = self._store()
        return await restore(store.read, store.write, home, task_id, kind, force=force)

    def _store(self) -> AsyncStore:
        if self.store is None:
            raise NotHere("not connected yet: the store is still opening")
        return self.store

    def _live(self) -> dict[str, LiveView] | None:
        return None

    def _meter(self) -> MeterSnapshot | None:
        """The meter in hand (embedded: the backend's); None: the heartbeat's."""
        return None


def _approve_as_shown(tx: Tx, actor: str, server: str, shown: dict[str, str]) -> list[McpTool]:
    # One transaction: a server relisting while the review was open cannot slip a change in.
    now = dict(tx.execute("SELECT name, schema_hash FROM mcp_tools WHERE server = ?", (server,)).fetchall())
    changed = sorted(name for name, digest in shown.items() if now.get(name) != digest)
    if changed:
        raise InvalidArgument(f"mcp.{server}.{changed[0]} changed again while shown: review it again")
    return r.approve_mcp(tx, actor, server, list(shown))


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
            self.host.stop()  # the host's ordered stop: running steps recorded, the claim released

    @property
    def crew(self) -> Crew | None:
        """The crew, once the host has started it."""
        return self.host.crew if self.host is not None else None

    def paused(self, agent: str) -> bool:
        return self.crew is not None and self.crew.loops[agent].paused

    async def pause(self, agent: str) -> None:
        self._crew().loops[agent].pause(True)  # it finishes what it is doing, then takes no new task

    async def resume(self, agent: str) -> None:
        self._crew().loops[agent].pause(False)

    def _crew(self) -> Crew:
        crew = self.crew
        if crew is None:
            raise NotHere("the crew has not started yet")
        return crew

    def _live(self) -> dict[str, LiveView] | None:
        crew = self.crew
        return {name: crew.live(name) for name in crew.agents} if crew is not None else None

    def _meter(self) -> MeterSnapshot | None:
        return self.backend.snapshot()


class Attached(Connection):
    """The TUI on the home of an instance running headless: decisions and messages go
    through the reducers; the instance's crew picks them up from the store."""

    def __init__(self, db_path: Path, config: Config) -> None:
        super().__init__(db_path, config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        store = AsyncStore(self.db_path, self.agents)
        await store.open()
        try:
            self.store = store
            self.bus = Bus(store)  # before start(): a cancel mid-start still closes its reader
            await self.bus.start()
            self.ready.set()
            await self._stop.wait()  # until stopped or cancelled
        finally:
            try:
                if self.bus is not None:
                    await self.bus.close()
                await store.close()
            finally:
                self.closed.set()
