"""A reducer's view of one write transaction: validated actors and appended events."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from agents.errors import InvalidArgument, NotFound
from agents.protocol import OWNER, SYSTEM, Event, Payload, encode_payload, kind_of

_ROW_NAMES = {
    "tasks": "task", "approvals": "approval", "tool_calls": "tool call", "memory": "memory",
    "messages": "message", "channels": "channel", "permission_rules": "permission rule",
    "agent_status": "status of agent", "schedules": "schedule", "inference_usage": "usage row",
    "checkpoints": "checkpoint", "notifications": "notification",
}


class Tx:
    """Handed to every reducer. Writes go through `execute`; every change calls `emit`."""

    def __init__(self, conn: sqlite3.Connection, agents: frozenset[str], now: float) -> None:
        self.conn = conn
        self.agents = agents
        self.now = now
        self.events: list[Event] = []  # appended in this transaction, for the bus

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, tuple(params)).fetchone()

    def row(self, table: str, row_id: int | str, key: str = "id") -> sqlite3.Row:
        row = self.one(f"SELECT * FROM {table} WHERE {key} = ?", (row_id,))
        if row is None:
            raise NotFound(f"{_ROW_NAMES.get(table, table)} {row_id} not found")
        return row

    def emit(
        self, actor: str, payload: Payload, *, subject: str = "", recipient: str | None = None
    ) -> int:
        """Append one event in this transaction."""
        kind = kind_of(payload)
        cur = self.conn.execute(
            "INSERT INTO events (ts, kind, actor, subject, recipient, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.now, kind, actor, subject, recipient, encode_payload(payload)),
        )
        event_id = cur.lastrowid
        assert event_id is not None
        self.events.append(
            Event(id=event_id, ts=self.now, kind=kind, actor=actor, subject=subject,
                  recipient=recipient, payload=payload)
        )
        return event_id

    # --- who is asking ---

    def check_actor(self, actor: str) -> None:
        if actor not in (OWNER, SYSTEM) and actor not in self.agents:
            raise InvalidArgument(f"unknown actor {actor!r}")

    def check_agent(self, name: str, what: str = "agent") -> None:
        if name not in self.agents:
            known = ", ".join(sorted(self.agents)) or "none configured"
            raise InvalidArgument(f"unknown {what} {name!r} (agents: {known})")

    @staticmethod
    def privileged(actor: str) -> bool:
        """The person and agentdeck itself may change anything."""
        return actor in (OWNER, SYSTEM)
