"""Agent health for status displays: derived from agent_status and the instance row."""

from __future__ import annotations

import sqlite3
import time

import msgspec

from agents.protocol import TASK_STATUSES, AgentState, AgentStatus, Health
from agents.store import queries
from agents.store.reducers.agents import INSTANCE_STALE_S

HEARTBEAT_STALE_S = 15.0


class AgentHealth(msgspec.Struct, kw_only=True):
    name: str
    state: AgentState
    health: Health
    task_id: int | None
    heartbeat_at: float | None
    detail: str


class InstanceInfo(msgspec.Struct, kw_only=True):
    pid: int
    started_at: float
    heartbeat_at: float


class StatusReport(msgspec.Struct, kw_only=True):
    agents: list[AgentHealth]
    pending_approvals: int
    tasks: dict[str, int]
    instance: InstanceInfo | None
    slots: dict[str, object] | None  # the engine's meter, published by the running instance


def health_of(status: AgentStatus | None, running: bool, now: float) -> tuple[AgentState, Health]:
    if status is None or not running:
        return "offline", "amber"
    if status.state in ("crashed", "stopped"):
        return status.state, "red"
    if status.heartbeat_at is None or now - status.heartbeat_at > HEARTBEAT_STALE_S:
        return status.state, "amber"
    return status.state, "green"


def agents_and_instance(
    conn: sqlite3.Connection, agent_names: list[str], now: float | None = None
) -> tuple[list[AgentHealth], InstanceInfo | None, dict[str, object] | None]:
    """Each agent's health, the running instance (None when none runs) and its meter:
    what a live display reads several times a second (no task counts)."""
    now = time.time() if now is None else now
    row = queries.instance(conn)
    running = row is not None and now - row["heartbeat_at"] < INSTANCE_STALE_S
    instance = (
        InstanceInfo(pid=row["pid"], started_at=row["started_at"], heartbeat_at=row["heartbeat_at"])
        if running and row is not None
        else None
    )
    slots = msgspec.msgpack.decode(row["meter"]) if running and row and row["meter"] else None
    statuses = queries.agent_statuses(conn)
    agents = []
    for name in agent_names:
        st = statuses.get(name)
        state, health = health_of(st, running, now)
        agents.append(
            AgentHealth(
                name=name, state=state, health=health, task_id=st.task_id if st else None,
                heartbeat_at=st.heartbeat_at if st else None, detail=st.detail if st else "",
            )
        )
    return agents, instance, slots


def status_report(
    conn: sqlite3.Connection, agent_names: list[str], now: float | None = None
) -> StatusReport:
    agents, instance, slots = agents_and_instance(conn, agent_names, now)
    counts = queries.task_counts(conn)
    pending = conn.execute("SELECT COUNT(*) FROM approvals WHERE status = 'pending'").fetchone()[0]
    return StatusReport(
        agents=agents,
        pending_approvals=int(pending),
        tasks={s: counts.get(s, 0) for s in TASK_STATUSES},
        instance=instance,
        slots=slots,
    )
