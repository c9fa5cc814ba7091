"""The host's side of hooks: task and approval events from the bus, each handed to its
hooks in the background. Nothing here waits for a hook: a slow or failing hook is logged
and never holds the bus reader, the event loop or the work."""

from __future__ import annotations

import logging

from agents.bus import Bus
from agents.hooks.dispatch import Hooks
from agents.hooks.run import HookEvent
from agents.protocol import ApprovalDecided, ApprovalRequested, Event, TaskCreated, TaskStatusChanged
from agents.store import AsyncStore, EventFilter, queries

log = logging.getLogger(__name__)

HOST_EVENTS = ("task.created", "task.done", "task.failed", "approval.requested", "approval.decided")
BUS_KINDS = ["task.created", "task.status", "approval.requested", "approval.decided"]


async def hook_event(store: AsyncStore, event: Event) -> HookEvent | None:
    """The hook event for a bus event, or None where no hook event answers it."""
    p = event.payload
    if isinstance(p, TaskCreated):
        return HookEvent(event="task.created", agent=p.task.owner, task_id=p.task.id, title=p.task.title,
                         status=p.task.status, ts=event.ts)
    if isinstance(p, TaskStatusChanged) and p.new in ("done", "failed"):
        task = await store.read(queries.task, p.task_id)
        return HookEvent(event=f"task.{p.new}", agent=task.owner if task else None, task_id=p.task_id,
                         title=task.title if task else None, status=p.new,
                         result=p.result if p.result is not None else (task.result if task else None),
                         ts=event.ts)
    if isinstance(p, ApprovalRequested):
        a = p.approval
        return HookEvent(event="approval.requested", agent=a.agent, tool=a.tool, arguments=a.arguments,
                         task_id=a.task_id, approval_id=a.id, status=a.status, ts=event.ts)
    if isinstance(p, ApprovalDecided):
        found = await store.read(queries.approval, p.approval_id)
        return HookEvent(event="approval.decided", agent=found.agent if found else None,
                         tool=found.tool if found else None, arguments=found.arguments if found else None,
                         task_id=found.task_id if found else None, approval_id=p.approval_id, status=p.status,
                         ts=event.ts)
    return None


async def run_event_hooks(bus: Bus, store: AsyncStore, hooks: Hooks, start: int) -> None:
    """Follow the bus from event `start` until cancelled, firing each event's hooks; on
    cancellation the hooks still running are stopped (their process groups killed)."""
    if not any(hooks.wanted(name) for name in HOST_EVENTS):
        return
    sub = await bus.subscribe(None, EventFilter(kinds=BUS_KINDS), start=start)
    try:
        async for event in sub:
            try:
                found = await hook_event(store, event)
            except Exception as err:  # one unreadable event must not end the hooks
                log.warning("hooks: event %d not handled: %s", event.id, err)
                continue
            if found is not None:
                hooks.fire(found)
    finally:
        await sub.close()
        await hooks.close()
