"""`agentdeck run`: the running instance, headless.

On start it claims the instance row, recovers from whatever stopped the last run (tool
calls left running are marked interrupted and reported, overdue approvals expire,
pending ones come back, missed schedules run once), then keeps the house: heartbeats,
approval expiry, schedules, the headless approval policy, and one line per event on
stdout. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import psutil
from rich.console import Console

from agents.bus import Bus, Subscription
from agents.config import Config
from agents.errors import InvalidTransition
from agents.inference import Engine, resolve_model_path
from agents.protocol import SYSTEM, ApprovalRequested, Event
from agents.safe_text import safe_text
from agents.store import AsyncStore, EventFilter, queries
from agents.store import reducers as r
from agents.store.database import checkpoint, wal_bytes
from app.cmd_log import event_json, event_text
from app.context import Context
from app.progress import LoadProgress

log = logging.getLogger(__name__)

TICK_S = 1.0
# No new event for this long: checkpoint the WAL into the database and truncate it, so a
# burst of writes does not leave a WAL larger than the database behind. (Heartbeats write
# every second but add no event; a WAL that small is left alone.)
CHECKPOINT_IDLE_S = 2.0
CHECKPOINT_MIN_WAL = 1 << 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--headless", action="store_true",
        help="no TUI; report events on stdout (the only mode until the TUI lands)",
    )
    p.add_argument(
        "--approvals", choices=["deny", "cli"], default="deny",
        help="headless approvals: deny (default) every request, or cli: wait for "
        "`agentdeck approve ID` from another terminal",
    )
    p.add_argument("--json", action="store_true", help="report events as JSON lines")
    p.add_argument("--model", metavar="PATH", help="GGUF model (default: inference.model, "
                   "else the embedded SmolLM2-135M-Instruct)")


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    config = ctx.config  # a bad config or a missing model fails here, before anything starts
    model = resolve_model_path(args.model, config.inference.model)
    ctx.ensure_home()
    instance = Instance(ctx, config, model, approvals=args.approvals, as_json=args.json)
    return asyncio.run(instance.run())


def _write_line(line: str) -> bool:
    """False once nobody reads stdout any more (`agentdeck run | head`)."""
    try:
        sys.stdout.write(safe_text(line) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


def _alive(pid: int) -> bool:
    """Is a process with this pid running on this machine? A zombie (killed, not yet
    reaped by its parent) is not: it will never heartbeat again."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


class Instance:
    def __init__(
        self, ctx: Context, config: Config, model: Path, *, approvals: str, as_json: bool
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.model = model
        self.engine: Engine | None = None
        self.approvals = approvals
        self.as_json = as_json
        self.pid = os.getpid()
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.reporting = True  # until stdout's reader goes away
        self.last_event_seen = -1  # for the idle checkpoint
        self.quiet_since = time.monotonic()

    async def say(self, line: str) -> None:
        """A line on stdout, written off the loop: a stalled pipe (a paused pager) must
        not stall heartbeats; it only slows the reporter, whose bus queue then fills."""
        if self.reporting and not await asyncio.to_thread(_write_line, line):
            self.reporting = False  # the instance keeps running; it only stops reporting
            log.warning("stdout was closed; no more event lines")

    async def run(self) -> int:
        store = await AsyncStore(self.ctx.db_path, self.config.enabled_agents()).open()
        bus: Bus | None = None
        workers: list[asyncio.Task[None]] = []
        claimed = False
        try:
            previous = await store.read(queries.instance)
            dead = previous["pid"] if previous and not _alive(previous["pid"]) else None
            await store.write(r.claim_instance, SYSTEM, self.pid, dead_pid=dead)
            claimed = True
            # Heartbeat at once: a long model load must not let a second instance in.
            workers.append(asyncio.create_task(self._every(TICK_S, self._heartbeat, store)))
            await self.load_model()
            bus = await Bus(store).start()
            start_id = await store.read(queries.last_event_id)
            reporter = await bus.subscribe(start=start_id)
            approvals = await bus.subscribe(
                "instance:approvals", EventFilter(kinds=["approval.requested"]), start="now"
            )
            await self.recover(store)
            loop = asyncio.get_running_loop()
            # SIGHUP too: a closed terminal or `systemctl reload` must release the row.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, self.stopping.set)
            await self.say(
                f"agentdeck running (pid {self.pid}, home {self.ctx.home}, approvals: "
                f"{self.approvals}); Ctrl-C stops"
            )
            workers += [
                asyncio.create_task(self._every(TICK_S, self._expire, store)),
                asyncio.create_task(self._every(TICK_S, self._schedules, store)),
                asyncio.create_task(self._every(TICK_S, self._checkpoint_when_idle, store)),
                asyncio.create_task(self._each(reporter, self._report)),
                asyncio.create_task(self._each(approvals, lambda e: self._apply_policy(store, e))),
            ]
            await self.stopping.wait()
            await self.say("agentdeck stopped" if self.exit_code == 0 else "agentdeck stopped: claim lost")
            return self.exit_code
        finally:
            await self._shut_down(store, bus, workers, claimed)

    async def _shut_down(
        self, store: AsyncStore, bus: Bus | None, workers: list[asyncio.Task[None]], claimed: bool
    ) -> None:
        """Every step runs even when one before it fails: a half-stopped instance would
        hold its row, its threads or the model."""
        for w in workers:
            w.cancel()
        for w in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if self.engine is not None:
            steps.append(("stopping the engine", self.engine.stop))
        if bus is not None:
            steps.append(("closing the bus", bus.close))
        if claimed:
            steps.append(("releasing the instance row",
                          lambda: store.write(r.release_instance, SYSTEM, self.pid)))
        steps.append(("closing the store", store.close))
        for what, step in steps:
            try:
                await step()
            except Exception as err:
                log.warning("%s failed: %s", what, err)

    async def load_model(self) -> None:
        console = Console(stderr=True)
        with LoadProgress(console, safe_text(f"loading {self.model.name}")) as progress:
            self.engine = Engine(self.config.inference, model_path=self.model, progress=progress)
            await self.engine.start()
        snap = self.engine.snapshot()
        await self.say(
            f"model {self.model.name} loaded in {self.engine.load_time_s:.1f} s on "
            f"{snap.device}: {len(snap.slots)} slots, {snap.kv_total} KV cells"
        )

    async def recover(self, store: AsyncStore) -> None:
        interrupted = await store.write(r.interrupt_running_tool_calls, SYSTEM)
        for call in interrupted:
            await self.say(
                f"recovered: tool call {call.id} ({call.agent} {call.tool}) was interrupted; "
                "not run again"
            )
        expired = await store.write(r.expire_approvals, SYSTEM)
        if expired:
            await self.say(f"recovered: {len(expired)} approval(s) expired while agentdeck was down")
        pending = await store.read(queries.approvals, status="pending")
        if pending:
            await self.say(f"{len(pending)} approval(s) pending: `agentdeck approvals` lists them")
            if self.approvals == "deny":
                for approval in pending:
                    await self._deny_by_policy(store, approval.id)
        await self._schedules(store)

    async def _every(self, seconds: float, job: Callable[[AsyncStore], Awaitable[None]],
                     store: AsyncStore) -> None:
        """Run `job` every `seconds`; a failure (a database locked for too long, say) is
        logged and the next tick tries again."""
        while True:
            try:
                await job(store)
            except Exception as err:
                log.warning("%s failed: %s; retrying", job.__name__.lstrip("_"), err)
            await asyncio.sleep(seconds)

    async def _each(self, sub: Subscription, handle: Callable[[Event], Awaitable[None]]) -> None:
        """Handle each event of `sub`; one failing event is logged, not fatal."""
        async for event in sub:
            try:
                await handle(event)
            except Exception as err:
                log.warning("handling event %d failed: %s", event.id, err)

    async def _heartbeat(self, store: AsyncStore) -> None:
        # The slot meter rides along, for `agentdeck status --json` in other terminals.
        meter = msgspec.msgpack.encode(self.engine.snapshot()) if self.engine else None
        if not await store.write(r.instance_heartbeat, SYSTEM, self.pid, meter):
            # Our row is gone or another instance holds it: two instances must not run.
            log.error("another process took over this home's instance row; stopping")
            self.exit_code = 1
            self.stopping.set()

    async def _expire(self, store: AsyncStore) -> None:
        await store.write(r.expire_approvals, SYSTEM)

    async def _schedules(self, store: AsyncStore) -> None:
        for schedule in await store.read(queries.due_schedules, time.time()):
            try:
                await store.write(r.fire_schedule, SYSTEM, schedule.id)
            except InvalidTransition:
                continue  # fired meanwhile by someone else
            except sqlite3.OperationalError:
                raise  # locked for now: the next tick tries again
            except Exception as err:  # this schedule is broken, not the instance
                reason = f"{type(err).__name__}: {err}"
                log.warning("schedule %d (%s %s) cannot fire: %s; disabled", schedule.id,
                            schedule.agent, schedule.name, reason)
                await store.write(r.mark_schedule_failed, SYSTEM, schedule.id, reason)

    async def _checkpoint_when_idle(self, store: AsyncStore) -> None:
        """Once no event has been appended (by any process) for CHECKPOINT_IDLE_S and the
        WAL holds more than heartbeats, fold it into the database and truncate it."""
        head = await store.read(queries.last_event_id)
        now = time.monotonic()
        if head != self.last_event_seen:
            self.last_event_seen, self.quiet_since = head, now
            return
        if now - self.quiet_since >= CHECKPOINT_IDLE_S and await store.read(wal_bytes) > CHECKPOINT_MIN_WAL:
            await store.read(checkpoint)

    async def _report(self, event: Event) -> None:
        await self.say(event_json(event) if self.as_json else event_text(event))

    async def _apply_policy(self, store: AsyncStore, event: Event) -> None:
        if self.approvals == "deny" and isinstance(event.payload, ApprovalRequested):
            await self._deny_by_policy(store, event.payload.approval.id)

    async def _deny_by_policy(self, store: AsyncStore, approval_id: int) -> None:
        # Headless never silently allows: with no one to ask, the answer is no.
        with contextlib.suppress(InvalidTransition):  # decided meanwhile by someone else
            await store.write(
                r.decide_approval, SYSTEM, approval_id, False, decided_by="headless_policy"
            )
