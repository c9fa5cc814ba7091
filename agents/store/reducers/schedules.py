"""Schedules: an agent's recurring stimulus. Firing one creates a task for the agent."""

from __future__ import annotations

import math

from croniter import croniter

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.limits import MAX_INTERVAL_S, MIN_INTERVAL_S, number_in, timestamp
from agents.protocol import (
    Schedule,
    ScheduleFailed,
    ScheduleFired,
    ScheduleRemoved,
    ScheduleSet,
    ScheduleSkipped,
    decode_payload,
)
from agents.store import rows
from agents.store.reducers.tasks import create_task
from agents.store.tx import Tx

FINISHED = ("done", "failed", "cancelled")  # a schedule's next run waits for these


def set_schedule(
    tx: Tx,
    actor: str,
    agent: str,
    name: str,
    interval_s: float,
    *,
    body: str = "",
    enabled: bool = True,
    first_run_at: float | None = None,
    cron: str | None = None,
) -> Schedule:
    """Every `interval_s` seconds, or at the times of a `cron` expression (then
    `interval_s` is ignored and recorded as the gap between its next two runs)."""
    tx.check_actor(actor)
    tx.check_agent(agent)
    if agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not set {agent}'s schedules")
    if cron is not None:
        cron = cron.strip()
        if not croniter.is_valid(cron):
            raise InvalidArgument(f"not a cron expression: {cron!r}")
        it = croniter(cron, tx.now)
        soon = it.get_next(float)
        interval_s = it.get_next(float) - soon
        if first_run_at is None:
            first_run_at = soon
    interval_s = number_in(interval_s, "interval_s", MIN_INTERVAL_S, MAX_INTERVAL_S)
    if first_run_at is not None:
        first_run_at = timestamp(first_run_at, "first_run_at", tx.now)
    if not name.strip():
        raise InvalidArgument("a schedule needs a name")
    next_run = first_run_at if first_run_at is not None else tx.now + interval_s
    tx.execute(
        "INSERT INTO schedules (agent, name, interval_s, body, enabled, next_run_at, cron) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent, name) DO UPDATE SET "
        "interval_s = excluded.interval_s, body = excluded.body, enabled = excluded.enabled, "
        "next_run_at = excluded.next_run_at, cron = excluded.cron, last_error = NULL",
        (agent, name, interval_s, body, int(enabled), next_run, cron),
    )
    row = tx.one("SELECT * FROM schedules WHERE agent = ? AND name = ?", (agent, name))
    assert row is not None
    schedule = rows.schedule(row)
    tx.emit(actor, ScheduleSet(schedule=schedule), subject=f"schedule:{schedule.id}", recipient=agent)
    return schedule


def fire_schedule(tx: Tx, actor: str, schedule_id: int) -> int | None:
    """Run a due schedule once: a task for its agent, and the next run after now (missed
    runs while agentdeck was down collapse into this one). None: skipped, because the
    task of its last run is not finished yet (an agent behind on its health checks must
    not find a pile of them); the next run is still moved on, and a schedule.skipped
    event says so."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not fire schedules")
    schedule = rows.schedule(tx.row("schedules", schedule_id))
    if not schedule.enabled:
        raise InvalidArgument(f"schedule {schedule_id} is disabled")
    if schedule.next_run_at > tx.now:  # fired already (by another instance, say)
        raise InvalidTransition(f"schedule {schedule_id} is not due")
    next_run = _next_run(tx, schedule)
    pending = last_run_pending(tx, schedule)
    if pending is not None:
        tx.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (next_run, schedule_id))
        tx.emit(  # like every change, the skip (and the moved next run) is an event
            actor, ScheduleSkipped(schedule_id=schedule_id, pending_task_id=pending, next_run_at=next_run),
            subject=f"schedule:{schedule_id}", recipient=schedule.agent,
        )
        return None
    task = create_task(
        tx, actor, f"[{schedule.name}] scheduled", body=schedule.body, owner=schedule.agent
    )
    tx.execute(
        "UPDATE schedules SET last_run_at = ?, next_run_at = ? WHERE id = ?",
        (tx.now, next_run, schedule_id),
    )
    tx.emit(
        actor, ScheduleFired(schedule_id=schedule_id, task_id=task.id, next_run_at=next_run),
        subject=f"schedule:{schedule_id}", recipient=schedule.agent,
    )
    return task.id


def last_run_pending(tx: Tx, schedule: Schedule) -> int | None:
    """The task of the schedule's last run, while it is not finished (else None)."""
    fired = tx.one(
        "SELECT id, payload FROM events WHERE kind = 'schedule.fired' AND subject = ? "
        "ORDER BY id DESC LIMIT 1", (f"schedule:{schedule.id}",),
    )
    if fired is None:
        return None
    payload = decode_payload(fired["payload"], fired["id"])
    assert isinstance(payload, ScheduleFired)
    task = tx.one("SELECT owner, status FROM tasks WHERE id = ?", (payload.task_id,))
    # The owner check: a removed schedule's id may be reused by a new one.
    if task is None or task["owner"] != schedule.agent or task["status"] in FINISHED:
        return None
    return payload.task_id


def _next_run(tx: Tx, schedule: Schedule) -> float:
    next_run = schedule.next_run_at
    if schedule.cron is not None:  # missed runs collapse into this one
        next_run = croniter(schedule.cron, tx.now).get_next(float)
    elif next_run <= tx.now:
        missed = math.floor((tx.now - next_run) / schedule.interval_s) + 1
        next_run += missed * schedule.interval_s
    return next_run


def remove_schedule(tx: Tx, actor: str, schedule_id: int) -> Schedule:
    tx.check_actor(actor)
    schedule = rows.schedule(tx.row("schedules", schedule_id))
    if schedule.agent != actor and not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not remove {schedule.agent}'s schedules")
    tx.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))
    tx.emit(
        actor, ScheduleRemoved(schedule_id=schedule_id, agent=schedule.agent, name=schedule.name),
        subject=f"schedule:{schedule_id}", recipient=schedule.agent,
    )
    return schedule


def mark_schedule_failed(tx: Tx, actor: str, schedule_id: int, error: str) -> Schedule:
    """A schedule that cannot fire is disabled with the reason, so that it neither stops
    the instance nor fails again every tick; setting it again clears the mark."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not mark schedules")
    tx.row("schedules", schedule_id)
    error = error[:500]
    tx.execute(
        "UPDATE schedules SET enabled = 0, last_error = ? WHERE id = ?", (error, schedule_id)
    )
    schedule = rows.schedule(tx.row("schedules", schedule_id))
    tx.emit(
        actor, ScheduleFailed(schedule_id=schedule_id, error=error),
        subject=f"schedule:{schedule_id}", recipient=schedule.agent,
    )
    return schedule
