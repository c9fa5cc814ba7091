"""The host's notifier: when an approval is requested, a task fails or a backend's
breaker opens (each as switched on in `[notify] events`), it records a `notifications`
row per channel and delivers in the background.

    notifier = Notifier(config, home, store)
    await notifier.start(bus, start=first_event_id, meter=backend.snapshot)
    ...
    await notifier.stop()

Approvals and failed tasks arrive on the bus; a breaker is seen by polling the meter.
Deliveries wait in a bounded queue for a bounded number of workers, so a slow or dead
webhook never holds up the event loop or the crew; a stop cancels them at once (a retry's
wait included) and records what was left undelivered as failed. In quiet hours nothing
is delivered (skipped, "quiet hours") but an approval's webhook: an approval waits for
the person, who must be able to find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx2
import msgspec

from agents.bus import Bus, Subscription
from agents.config import Config
from agents.errors import AgentdeckError
from agents.inference.meter import MeterSnapshot
from agents.notify import desktop, webhook
from agents.notify.text import (
    Note,
    approval_note,
    breaker_note,
    in_quiet_hours,
    open_breakers,
    task_failed_note,
)
from agents.protocol import SYSTEM, ApprovalRequested, Event, TaskStatusChanged
from agents.redact import Redactor, redactor_for
from agents.secrets import REFERENCE_PREFIX, SecretError, get_secret, resolve
from agents.store import AsyncStore, EventFilter, queries
from agents.store.reducers.notifications import (
    Channel,
    DeliveryStatus,
    record_notification,
    update_notification,
)

log = logging.getLogger(__name__)

BACKOFF_S = 1.0  # before the first retry; doubled for each next one
QUEUE_SIZE = 100  # deliveries waiting; past that, new ones are recorded failed at once
CONCURRENCY = 4  # deliveries under way at once
BREAKER_POLL_S = 2.0
STOP_RECORD_S = 1.0  # a stop's last write (what was left undelivered) waits at most this


class _Delivery(msgspec.Struct, frozen=True):
    row_id: int
    channel: Channel
    note: Note
    how: str = ""  # the desktop's way (desktop-notifier or notify-send)


class Notifier:
    def __init__(self, config: Config, home: Path, store: AsyncStore, *, backoff_s: float = BACKOFF_S,
                 queue_size: int = QUEUE_SIZE, concurrency: int = CONCURRENCY,
                 breaker_poll_s: float = BREAKER_POLL_S,
                 local_time: Callable[[], datetime.datetime] = datetime.datetime.now,
                 env: Mapping[str, str] | None = None) -> None:
        self.config = config.notify
        self._full_config = config
        self.home = home
        self.store = store
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.breaker_poll_s = breaker_poll_s
        self.local_time = local_time
        self.env = env
        self.queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=queue_size)
        self.redact: Callable[[str], str] = lambda text: text
        self._client: httpx2.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None
        # Rows recorded and not yet sent, failed or skipped: their attempts and outcomes so far.
        self._unfinished: dict[int, tuple[int, int | None, str]] = {}
        self._breakers_open: set[str] = set()

    # --- lifecycle ---

    async def start(self, bus: Bus, *, start: int, meter: Callable[[], MeterSnapshot] | None = None) -> None:
        """Follow the bus from event id `start` (the run's first), and poll `meter` for
        breakers. Nothing starts when no event is switched on or no channel is set."""
        events = set(self.config.events)
        if not events or not (self.config.url or (self.config.desktop and self._desktop_session())):
            return  # nowhere to deliver (a headless machine without a webhook): nothing runs
        self.redact = await asyncio.to_thread(self._redactor)
        self._client = httpx2.AsyncClient(follow_redirects=False)
        kinds = [kind for kind, on in (("approval.requested", "approval.requested" in events),
                                       ("task.status", "task.failed" in events)) if on]
        if kinds:
            self._sub = await bus.subscribe(None, EventFilter(kinds=kinds), start=start)
            self._tasks.append(asyncio.create_task(self._follow(self._sub), name="notify-events"))
        if meter is not None and "breaker.open" in events:
            self._tasks.append(asyncio.create_task(self._watch_breakers(meter), name="notify-breakers"))
        self._tasks += [asyncio.create_task(self._work(), name=f"notify-{i}")
                        for i in range(self.concurrency)]

    async def stop(self) -> None:
        """Ends at once: deliveries under way are cancelled (a retry's wait too) and what
        was not delivered is recorded failed."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()
        left, self._unfinished = self._unfinished, {}
        if left:
            log.warning("%d notification(s) not delivered: agentdeck stopped first", len(left))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_RECORD_S):
                    for row_id, (attempts, http_status, outcomes) in sorted(left.items()):
                        detail = ", ".join(o for o in (outcomes, "agentdeck stopped before delivery") if o)
                        await self._finish(row_id, "failed", attempts=attempts, http_status=http_status,
                                           detail=detail)

    # --- what to tell ---

    async def notify(self, note: Note) -> list[int]:
        """Record `note` once per channel and queue its deliveries; returns the rows' ids."""
        quiet = in_quiet_hours(self.config, self.local_time())
        rows: list[int] = []
        if self.config.url:
            if quiet and note.event != "approval.requested":
                rows.append(await self._record(note, "webhook", "skipped", "quiet hours"))
            else:
                rows.append(await self._queue(note, "webhook"))
        if self.config.desktop:
            if quiet:
                rows.append(await self._record(note, "desktop", "skipped", "quiet hours"))
            else:
                try:
                    how = desktop.check_desktop(self.env)
                except desktop.DesktopUnavailable as why:
                    rows.append(await self._record(note, "desktop", "skipped", str(why)))
                else:
                    rows.append(await self._queue(note, "desktop", how))
        return rows

    async def _follow(self, sub: Subscription) -> None:
        async for event in sub:
            try:
                note = await self._note_for(event)
                if note is not None:
                    await self.notify(note)
            except Exception as err:  # one event that cannot be told must not stop the next
                log.warning("notifying of event %d failed: %s", event.id, err)

    async def _note_for(self, event: Event) -> Note | None:
        payload = event.payload
        if isinstance(payload, ApprovalRequested):
            return approval_note(payload.approval, event.ts, self.redact)
        if isinstance(payload, TaskStatusChanged) and payload.new == "failed":
            task = await self.store.read(queries.task, payload.task_id)
            return task_failed_note(payload.task_id, task, payload.result, event.ts, self.redact)
        return None

    def _desktop_session(self) -> bool:
        try:
            desktop.check_desktop(self.env)
        except desktop.DesktopUnavailable:
            return False
        return True

    async def _watch_breakers(self, meter: Callable[[], MeterSnapshot]) -> None:
        while True:
            try:
                snapshot = meter()
                opened = open_breakers(snapshot) if isinstance(snapshot, MeterSnapshot) else {}
                for name in sorted(set(opened) - self._breakers_open):
                    await self.notify(breaker_note(name, opened[name], time.time(), self.redact))
                self._breakers_open = set(opened)
            except Exception as err:
                log.warning("watching the backends' breakers failed: %s", err)
            await asyncio.sleep(self.breaker_poll_s)

    # --- rows ---

    async def _record(self, note: Note, channel: Channel, status: DeliveryStatus = "pending",
                      detail: str = "") -> int:
        return await self.store.write(record_notification, SYSTEM, note.event, note.subject, channel,
                                      approval_id=note.approval_id, status=status, detail=detail)

    async def _queue(self, note: Note, channel: Channel, how: str = "") -> int:
        row_id = await self._record(note, channel)
        try:
            self.queue.put_nowait(_Delivery(row_id, channel, note, how))
        except asyncio.QueueFull:
            await self._finish(row_id, "failed", detail="too many notifications waiting")
        else:
            self._unfinished[row_id] = (0, None, "")
        return row_id

    async def _finish(self, row_id: int, status: DeliveryStatus, *, attempts: int = 0,
                      http_status: int | None = None, detail: str = "") -> None:
        await self.store.write(update_notification, SYSTEM, row_id, status=status, attempts=attempts,
                               http_status=http_status, detail=detail)
        if status in ("sent", "failed", "skipped"):
            self._unfinished.pop(row_id, None)
        elif row_id in self._unfinished:
            self._unfinished[row_id] = (attempts, http_status, detail)

    # --- delivery ---

    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if item.channel == "webhook":
                    await self._webhook(item)
                else:
                    await self._desktop(item)
            except Exception as err:  # recorded; the worker goes on with the next
                log.warning("notification %d (%s) failed: %s", item.row_id, item.channel, err)
                with contextlib.suppress(Exception):
                    await self._finish(item.row_id, "failed", detail=f"{type(err).__name__}")
            finally:
                self.queue.task_done()

    async def _webhook(self, item: _Delivery) -> None:
        try:
            headers = await asyncio.to_thread(self._headers)
        except AgentdeckError as err:  # a secret not set: its name is said, never a value
            await self._finish(item.row_id, "failed", detail=str(err))
            log.warning("notification of %s by webhook failed: %s", item.note.subject, err)
            return
        assert self._client is not None
        last_try = self.config.retries + 1

        async def record(attempts: list[webhook.Attempt]) -> None:
            now = attempts[-1]
            status: DeliveryStatus = "sent" if now.ok else \
                "failed" if now.final or len(attempts) == last_try else "retrying"
            await self._finish(item.row_id, status, attempts=len(attempts), http_status=now.http_status,
                               detail=", ".join(a.outcome for a in attempts))
            if status == "failed":
                log.warning("notification of %s by webhook failed after %d attempt(s): %s",
                            item.note.subject, len(attempts), now.outcome)

        await webhook.deliver(self._client, self.config, item.note, headers, backoff_s=self.backoff_s,
                              on_attempt=record)

    async def _desktop(self, item: _Delivery) -> None:
        way = os.path.basename(item.how)  # desktop-notifier, notify-send
        try:
            await desktop.send_desktop(item.note, item.how)
        except (OSError, RuntimeError, TimeoutError, ImportError) as err:
            await self._finish(item.row_id, "failed", attempts=1, detail=f"{way}: {err}"[:200])
            return
        await self._finish(item.row_id, "sent", attempts=1, detail=way)

    # --- secrets ---

    def _headers(self) -> dict[str, str]:
        """The webhook's headers, `keyring:NAME` values resolved (on a thread: a keyring
        may block). Resolved for each delivery: a secret set meanwhile is used."""
        return {key: resolve(value, f"notify.headers.{key}") for key, value in self.config.headers.items()}

    def _redactor(self) -> Callable[[str], str]:
        """Every known secret, the webhook headers' included, redacted from the texts."""
        known = redactor_for(self.home, self._full_config)
        own: dict[str, str] = {}
        for value in self.config.headers.values():
            if value.startswith(REFERENCE_PREFIX):
                name = value.removeprefix(REFERENCE_PREFIX)
                with contextlib.suppress(SecretError):
                    if secret := get_secret(name):
                        own[name] = secret
        headers = Redactor(own)
        return lambda text: headers(known(text))
