"""The running instance: one async context manager that both front ends enter.

    async with Host(db_path, config, backend=engine, approvals="deny") as host:
        ...  # host.recovery, host.store, host.bus, host.backend; host.stop() ends it

On enter it claims the home's instance row (taking over at once from a dead process,
a zombie included), starts heartbeats (carrying the inference meter) before the model
loads so that no second instance gets in meanwhile, starts the backend, opens the bus,
recovers from whatever stopped the last run (returned as a structured Recovery, for the
front end to present), and starts the housekeeping loops: approval expiry, schedules,
the headless approval policy, the idle WAL checkpoint. On exit every step of an ordered
shutdown runs, even when one before it fails. Front ends present; they hold no logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from agents.bus import Bus, Subscription
from agents.config import Config
from agents.crew import Crew
from agents.crew.harness import DEFAULT as DEFAULT_HARNESS
from agents.crew.harness import Harness
from agents.errors import InvalidTransition
from agents.gate import Gate
from agents.hooks import Hooks, run_event_hooks
from agents.inference.backend import Backend
from agents.memory.convert import ensure_embedding_model
from agents.memory.embedder import Embedder, EmbedderUnavailable, attach, detach
from agents.memory.indexer import MemoryIndexer
from agents.notify.notifier import Notifier
from agents.processes import process_alive
from agents.protocol import SYSTEM, Approval, ApprovalRequested, Event, McpToolsChanged, ToolCall
from agents.store import AsyncStore, EventFilter, queries
from agents.store import reducers as r
from agents.store.database import checkpoint, disk_full, wal_bytes

if TYPE_CHECKING:
    from agents.mcp.hub import McpHub

log = logging.getLogger(__name__)

TICK_S = 1.0
WORKTREE_CLEAN_S = 3600.0  # how often ended tasks' worktrees are looked at
# No new event for this long: checkpoint the WAL into the database and truncate it, so a
# burst of writes does not leave a WAL larger than the database behind. (Heartbeats write
# every second but add no event; a WAL that small is left alone.)
CHECKPOINT_IDLE_S = 2.0
CHECKPOINT_MIN_WAL = 1 << 20
# The whole shutdown ends within SHUTDOWN_S (plus LAST_STEP_S for each of its two cheap
# last steps): a phase stuck in a blocking call must not keep the instance (its row, its
# model) from stopping. Each step gets at most SHUTDOWN_STEP_S of what is left; one that
# takes longer is abandoned and the next runs. Releasing the row and closing the store
# always get at least LAST_STEP_S, however long the steps before them took.
SHUTDOWN_S = 8.0
SHUTDOWN_STEP_S = 3.0
LAST_STEP_S = 1.0
# Once a stop is requested, the process ends within this long whatever still runs: a
# thread stuck in a native call (tokenizing, the engine) cannot be interrupted. Longer
# than the longest shutdown, so that a slow but healthy stop is never cut short.
EXIT_GRACE_S = 12.0

# A schedule skipped this many times in a row (its last run unfinished) is warned about.
SKIPS_WARNED = 3

ApprovalPolicy = Literal["deny", "cli"]


class Recovery(msgspec.Struct, kw_only=True):
    """What the last run left behind, and what recovery did about it."""

    interrupted: list[ToolCall]  # were running: marked interrupted, never run again
    expired: list[int]  # approvals that expired while agentdeck was down
    pending: list[Approval]  # approvals still waiting for an answer
    denied_by_policy: list[int]  # of those, denied now by the headless policy
    schedules_fired: list[int]  # tasks created by missed schedules (once each)


def _write_stderr(data: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(2, data)


class Host:
    def __init__(self, db_path: Path, config: Config, *, backend: Backend,
                 approvals: ApprovalPolicy = "deny", pid: int | None = None, crew: bool = False,
                 harness: Harness = DEFAULT_HARNESS) -> None:
        self.db_path = db_path
        self.config = config
        self.backend = backend
        self.approvals = approvals
        self.pid = pid if pid is not None else os.getpid()
        self.store = AsyncStore(db_path, config.enabled_agents())
        self.bus: Bus | None = None
        self.recovery: Recovery | None = None
        self.run_crew = crew
        self.harness = harness
        self.crew: Crew | None = None
        self.gate: Gate | None = None  # the crew's
        self.mcp: McpHub | None = None  # the MCP servers' tools, when any is configured
        self.notifier: Notifier | None = None  # tells the person (webhook, desktop)
        self._worktrees_checked_at = -WORKTREE_CLEAN_S
        self.memory_indexer: MemoryIndexer | None = None  # with the crew
        self.first_event_id = 0  # events from here on are this run's (recovery's included)
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._loops: list[asyncio.Task[None]] = []
        self._claimed = False
        self._backend_started = False
        self._last_event_seen = -1
        self._quiet_since = time.monotonic()
        self._watchdog: threading.Thread | None = None
        self._disk_was_full = False  # said once, until writes succeed again
        self._skips_in_a_row: dict[int, int] = {}  # schedule id -> runs skipped since it last fired
        self._exit_requested = False
        self._exit_grace_s = EXIT_GRACE_S
        self._wake_r = self._wake_w = -1  # the watchdog's wake-up pipe, once armed

    # --- the context manager ---

    async def __aenter__(self) -> Host:
        await self.store.open()
        try:
            await self._start()
        except BaseException:
            await self._shut_down()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._shut_down()

    def stop(self, exit_code: int = 0) -> None:
        if not self.stopping.is_set():
            self.exit_code = exit_code
        self.stopping.set()

    def arm_exit_watchdog(self) -> None:
        """Start the exit watchdog's thread now, idle until exit_within. A front end whose
        signal handlers call exit_within arms it before installing them: a handler must
        not start a thread, nor take any lock (a signal landing while the main thread is
        inside Thread.start or Event.set would deadlock on it). The thread waits on a pipe,
        which the handler wakes with one os.write."""
        if self._watchdog is None:
            self._wake_r, self._wake_w = os.pipe()
            self._watchdog = threading.Thread(target=self._exit_after, daemon=True,
                                              name="agentdeck-exit-watchdog")
            self._watchdog.start()

    def exit_within(self, grace_s: float = EXIT_GRACE_S) -> None:
        """For a process that is this instance (the front ends, not tests): once called,
        the process ends within `grace_s` even when a thread stuck in a blocking native
        call would keep the interpreter alive (Python joins its worker threads at exit).
        The instance row is released first. Safe to call twice, and from a signal handler
        once the watchdog is armed (arm_exit_watchdog)."""
        if self._exit_requested:
            return
        self._exit_requested = True
        self._exit_grace_s = grace_s
        self.arm_exit_watchdog()  # armed already where a signal handler calls this
        os.write(self._wake_w, b"x")

    def _exit_after(self) -> None:
        os.read(self._wake_r, 1)
        time.sleep(self._exit_grace_s)
        # release_instance's DELETE as raw SQL on a connection of its own: the loop and
        # the store's thread may be the very things stuck, and a fresh Store would run its
        # open checks and migrations first. The busy timeout bounds a locked database.
        with contextlib.suppress(Exception):
            conn = sqlite3.connect(self.db_path, timeout=1.0)
            with conn:
                conn.execute("DELETE FROM instance WHERE id = 1 AND pid = ?", (self.pid,))
            conn.close()
        # One os.write to fd 2, not logging or sys.stderr, and no flush of Python's
        # streams: a thread writing to a stalled stdout (a paused pager) holds that
        # stream's lock for good. The write itself may block on a stalled stderr pipe
        # (`2>&1 | less`), so it gets its own thread and a second at most.
        line = (f"agentdeck: still stopping after {self._exit_grace_s:g} s (a thread is stuck "
                "in a blocking call); exiting now\n").encode()
        writer = threading.Thread(target=_write_stderr, args=(line,), daemon=True)
        writer.start()
        writer.join(1.0)
        os._exit(self.exit_code)

    async def subscribe(self, name: str | None = None, flt: EventFilter | None = None,
                        start: int | str | None = None) -> Subscription:
        assert self.bus is not None, "the host is not running"
        first = self.first_event_id if start is None else start
        return await self.bus.subscribe(name, flt, start=first)

    async def _start(self) -> None:
        store = self.store
        previous = await store.read(queries.instance)
        dead = previous["pid"] if previous and not process_alive(previous["pid"]) else None
        await store.write(r.claim_instance, SYSTEM, self.pid, dead_pid=dead)
        self._claimed = True
        # Heartbeat at once: a long model load must not let a second instance in.
        self._loops.append(asyncio.create_task(self._every(self._heartbeat)))
        self._backend_started = True  # stop() is safe on an engine that failed to start
        await self.backend.start()
        # The engine may lower n_ctx to what the model can use (read from the file):
        # the crew budgets prompts from what the backend really has, not the config.
        effective = self.backend.config
        if effective is not None and effective != self.config.inference:
            self.config = msgspec.structs.replace(self.config, inference=effective)
        self.bus = await Bus(store).start()
        self.first_event_id = await store.read(queries.last_event_id)
        await self._sync_schedules()
        # Hooks on task and approval events (tool.before/after run in the gate), and the
        # notifier: both follow the bus from here, in the background, bounded.
        self._loops.append(asyncio.create_task(run_event_hooks(
            self.bus, self.store, Hooks(self.config, self.db_path.parent), self.first_event_id)))
        self.notifier = Notifier(self.config, self.db_path.parent, self.store)
        await self.notifier.start(self.bus, start=self.first_event_id,
                                  meter=self.backend.snapshot)
        policy = await self.bus.subscribe("instance:approvals", EventFilter(kinds=["approval.requested"]),
                                          start="now")
        self.recovery = await self._recover()
        if self.run_crew and not self.stopping.is_set():  # stopped while the model loaded
            gate = self.gate = Gate(self.store, self.config, self.db_path.parent, bus=self.bus)
            self._loops.append(asyncio.create_task(self._every(self._clean_worktrees)))
            if any(server.enabled for server in self.config.mcp.values()):
                # MCP servers start with the crew (each within its start_timeout_s; one that
                # fails is down with its reason, the others and the crew go on).
                from agents.mcp.hub import McpHub  # the SDK is heavy: only when configured

                self.mcp = McpHub(self.config, self.db_path.parent, self.store)
                await self.mcp.start()
                gate.mcp = self.mcp
                approvals = await self.bus.subscribe("instance:mcp", EventFilter(kinds=["mcp.changed"]),
                                                     start="now")
                self._loops.append(asyncio.create_task(self._each(approvals, self._mcp_changed)))
            self.crew = Crew(self.store, self.bus, self.backend, gate, self.config, harness=self.harness)
            await self.crew.start(self.first_event_id)
            self.memory_indexer = MemoryIndexer(self.store, self.bus, Embedder(ensure_embedding_model))
            self._loops.append(asyncio.create_task(self._index_memories(self.memory_indexer)))
        self._loops += [
            asyncio.create_task(self._every(self._expire)),
            asyncio.create_task(self._every(self._schedules)),
            asyncio.create_task(self._every(self._checkpoint_when_idle)),
            asyncio.create_task(self._each(policy, self._apply_policy)),
        ]

    async def _shut_down(self) -> None:
        """Every step runs even when one before it fails or overruns: a half-stopped
        instance would hold its row, its threads or the model. All of it ends within
        SHUTDOWN_S (+ LAST_STEP_S for each cheap last step), well inside EXIT_GRACE_S."""
        deadline = time.monotonic() + SHUTDOWN_S

        def budget(floor: float = 0.0) -> float:
            return max(floor, min(SHUTDOWN_STEP_S, deadline - time.monotonic()))

        for task in self._loops:
            task.cancel()
        if self._loops:
            await asyncio.wait(self._loops, timeout=budget())
        self._loops.clear()
        steps: list[tuple[str, Callable[[], Awaitable[object]], float]] = []
        if self.crew is not None:
            steps.append(("stopping the crew", self.crew.stop, 0.0))
        if self.mcp is not None:
            steps.append(("stopping the MCP servers", self.mcp.stop, 0.0))
        if self.notifier is not None:
            steps.append(("stopping notifications", self.notifier.stop, 0.0))
        if self._backend_started:
            steps.append(("stopping the inference backend", self.backend.stop, 0.0))
        if self.bus is not None:
            steps.append(("closing the bus", self.bus.close, 0.0))
        if self._claimed:
            steps.append(("releasing the instance row",
                          lambda: self.store.write(r.release_instance, SYSTEM, self.pid), LAST_STEP_S))
        steps.append(("closing the store", self.store.close, LAST_STEP_S))
        for what, step, floor in steps:
            timeout = budget(floor)
            # Not wait_for: it waits for the cancelled step to end, and a step that
            # swallows cancellation (or waits on a stuck thread) would never end.
            running = asyncio.ensure_future(step())
            await asyncio.wait({running}, timeout=timeout)
            if not running.done():
                running.cancel()
                log.warning("%s took over %.1f s; going on without it", what, timeout)
            elif not running.cancelled() and running.exception() is not None:
                log.warning("%s failed: %s", what, running.exception())
        self._backend_started = self._claimed = False
        self.bus = self.crew = None

    async def _sync_schedules(self) -> None:
        """The config's schedules into the database. One that is unchanged keeps its next
        run (so a run missed while agentdeck was down still fires once, now)."""
        existing = {(s.agent, s.name): s for s in await self.store.read(queries.schedules)}
        enabled = self.config.enabled_agents()
        for wanted in self.config.schedules:
            if wanted.agent not in enabled:
                continue
            current = existing.get((wanted.agent, wanted.name))
            same = current is not None and current.cron == wanted.cron and current.body == wanted.body and (
                wanted.cron is not None or current.interval_s == wanted.every_s)
            if not same:
                every = 60.0 if wanted.every_s is None else wanted.every_s  # (unused with cron)
                await self.store.write(r.set_schedule, SYSTEM, wanted.agent, wanted.name, every,
                                       body=wanted.body, cron=wanted.cron)

    async def _index_memories(self, indexer: MemoryIndexer) -> None:
        """Recall by meaning for the crew: the embedding model loads (converted the first
        time) on its own thread while the crew already runs, then every memory gets its
        vector. Until then, or if it cannot load, recall is by words alone."""
        embedder = indexer.embedder
        try:
            try:
                await embedder.start()
            except (EmbedderUnavailable, TimeoutError) as err:
                log.warning("memory recall by meaning is off: %s", err or "the model took too long to load")
                return
            attach(self.store, embedder)
            await indexer.run()
        except Exception as err:
            if not self._disk_full(err):
                log.warning("memory indexing stopped: %s", err)
        finally:
            detach(self.store)
            embedder.close()

    # --- recovery ---

    async def _recover(self) -> Recovery:
        store = self.store
        interrupted = await store.write(r.interrupt_running_tool_calls, SYSTEM)
        expired = await store.write(r.expire_approvals, SYSTEM)
        pending = await store.read(queries.approvals, status="pending")
        denied = []
        if self.approvals == "deny":
            for approval in pending:
                if await self._deny_by_policy(approval.id):
                    denied.append(approval.id)
        fired = await self._fire_due_schedules()
        return Recovery(interrupted=interrupted, expired=expired, pending=pending,
                        denied_by_policy=denied, schedules_fired=fired)

    # --- housekeeping ---

    async def _mcp_changed(self, event: Event) -> None:
        """A person approved changed MCP tools (`agentdeck mcp approve`, maybe from another
        terminal): offer them from now on."""
        if self.mcp is not None and isinstance(event.payload, McpToolsChanged) and event.payload.approved:
            await self.mcp.reload_pins()

    async def _clean_worktrees(self) -> None:
        """Worktrees of tasks that ended `worktree_keep_days` ago are removed (their
        branches stay); looked at once an hour, the first time at start."""
        now = time.monotonic()
        if self.gate is None or now < self._worktrees_checked_at + WORKTREE_CLEAN_S:
            return
        self._worktrees_checked_at = now
        worktrees = self.gate.worktrees
        ids = worktrees.worktree_tasks()
        if not ids:
            return
        ended = {t.id: t.updated_at for t in await self.store.read(
            queries.tasks, statuses=("done", "failed", "cancelled")) if t.id in set(ids)}
        removed = await worktrees.clean(ended)
        if removed:
            log.info("removed the worktrees of ended tasks %s", ", ".join(map(str, removed)))

    async def _every(self, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` every TICK_S; a failure (a database locked for too long, say) is
        logged and the next tick tries again."""
        while True:
            try:
                await job()
            except Exception as err:
                if not self._disk_full(err):
                    log.warning("%s failed: %s; retrying", job.__name__.lstrip("_"), err)
            await asyncio.sleep(TICK_S)

    def _disk_full(self, err: Exception) -> bool:
        """Is `err` a full disk? Said once when it starts (every loop fails every tick
        meanwhile), not once a tick; the heartbeat says when writes succeed again."""
        full = disk_full(self.db_path, err)
        if full is None:
            return False
        if not self._disk_was_full:
            self._disk_was_full = True
            log.warning("%s; waiting", full)
        return True

    async def _each(self, sub: Subscription, handle: Callable[[Event], Awaitable[None]]) -> None:
        """Handle each event of `sub`; one failing event is logged, not fatal."""
        async for event in sub:
            try:
                await handle(event)
            except Exception as err:
                if not self._disk_full(err):
                    log.warning("handling event %d failed: %s", event.id, err)

    async def _heartbeat(self) -> None:
        # The meter rides along, for `agentdeck status --json` in other terminals.
        meter = msgspec.msgpack.encode(self.backend.snapshot()) if self._backend_ready() else None
        if not await self.store.write(r.instance_heartbeat, SYSTEM, self.pid, meter):
            # Our row is gone or another instance holds it: two instances must not run.
            log.error("another process took over this home's instance row; stopping")
            self.stop(exit_code=1)
        elif self._disk_was_full:
            self._disk_was_full = False
            log.info("the disk has room again: writes succeed")

    def _backend_ready(self) -> bool:
        return self.bus is not None  # the backend started before the bus opened

    async def _expire(self) -> None:
        await self.store.write(r.expire_approvals, SYSTEM)

    async def _schedules(self) -> None:
        await self._fire_due_schedules()

    async def _fire_due_schedules(self) -> list[int]:
        fired = []
        for schedule in await self.store.read(queries.due_schedules, time.time()):
            try:
                task_id = await self.store.write(r.fire_schedule, SYSTEM, schedule.id)
            except InvalidTransition:
                continue  # fired meanwhile by someone else
            except sqlite3.OperationalError:
                raise  # locked for now: the next tick tries again
            except Exception as err:  # this schedule is broken, not the instance
                reason = f"{type(err).__name__}: {err}"
                log.warning("schedule %d (%s %s) cannot fire: %s; disabled", schedule.id,
                            schedule.agent, schedule.name, reason)
                await self.store.write(r.mark_schedule_failed, SYSTEM, schedule.id, reason)
                continue
            if task_id is None:
                skips = self._skips_in_a_row[schedule.id] = self._skips_in_a_row.get(schedule.id, 0) + 1
                if skips == SKIPS_WARNED:  # its last run may be stuck (blocked, say): say so once
                    log.warning("schedule %d (%s %s) skipped %d times in a row: the task of its "
                                "last run is not finished", schedule.id, schedule.agent,
                                schedule.name, skips)
            else:
                self._skips_in_a_row.pop(schedule.id, None)
                fired.append(task_id)
        return fired

    async def _checkpoint_when_idle(self) -> None:
        """Once no event has been appended (by any process) for CHECKPOINT_IDLE_S and the
        WAL holds more than heartbeats, fold it into the database and truncate it."""
        head = await self.store.read(queries.last_event_id)
        now = time.monotonic()
        if head != self._last_event_seen:
            self._last_event_seen, self._quiet_since = head, now
            return
        quiet = now - self._quiet_since >= CHECKPOINT_IDLE_S
        if quiet and await self.store.read(wal_bytes) > CHECKPOINT_MIN_WAL:
            await self.store.read(checkpoint)

    async def _apply_policy(self, event: Event) -> None:
        if self.approvals == "deny" and isinstance(event.payload, ApprovalRequested):
            await self._deny_by_policy(event.payload.approval.id)

    async def _deny_by_policy(self, approval_id: int) -> bool:
        # Headless never silently allows: with no one to ask, the answer is no.
        try:
            await self.store.write(r.decide_approval, SYSTEM, approval_id, False,
                                   decided_by="headless_policy")
        except InvalidTransition:  # decided meanwhile by someone else
            return False
        return True
