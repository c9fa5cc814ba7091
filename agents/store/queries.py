"""Read-only queries: `fn(conn, ...)`, used through Store.read / AsyncStore.read or on a
reader's own connection."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from agents.errors import ProtocolError
from agents.protocol import (
    AgentStatus,
    Approval,
    ChannelMessage,
    Checkpoint,
    Event,
    McpTool,
    Memory,
    PermissionRule,
    Schedule,
    Task,
    ToolCall,
    decode_payload,
)
from agents.store import rows

log = logging.getLogger(__name__)


class EventFilter:
    """Which events a reader wants. Empty fields match everything."""

    __slots__ = ("actor", "kinds", "recipient", "subject_prefix")

    def __init__(
        self,
        *,
        kinds: Sequence[str] = (),
        actor: str | None = None,
        subject_prefix: str | None = None,
        recipient: str | None = None,
    ) -> None:
        self.kinds = tuple(kinds)
        self.actor = actor
        self.subject_prefix = subject_prefix
        self.recipient = recipient

    def sql(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        if self.kinds:
            clauses.append(f"kind IN ({','.join('?' * len(self.kinds))})")
            params.extend(self.kinds)
        if self.actor is not None:
            clauses.append("actor = ?")
            params.append(self.actor)
        if self.subject_prefix is not None:
            # GLOB is case-sensitive and index-friendly; escape its metacharacters.
            escaped = "".join(f"[{c}]" if c in "*?[" else c for c in self.subject_prefix)
            clauses.append("subject GLOB ?")
            params.append(escaped + "*")
        if self.recipient is not None:
            clauses.append("recipient = ?")
            params.append(self.recipient)
        return (" AND ".join(clauses) or "1"), params

    def matches(self, event: Event) -> bool:
        return (
            (not self.kinds or event.kind in self.kinds)
            and (self.actor is None or event.actor == self.actor)
            and (self.subject_prefix is None or event.subject.startswith(self.subject_prefix))
            and (self.recipient is None or event.recipient == self.recipient)
        )


def event_from_row(r: sqlite3.Row | tuple) -> Event:
    return Event(
        id=r[0], ts=r[1], kind=r[2], actor=r[3], subject=r[4], recipient=r[5],
        payload=decode_payload(r[6], r[0]),
    )


def decode_rows(found: Sequence[sqlite3.Row | tuple]) -> list[Event]:
    """Events of these rows; one this agentdeck cannot decode (written by a newer one) is
    left out with a warning, so one event never hides the rest of the log."""
    events: list[Event] = []
    for r in found:
        try:
            events.append(event_from_row(r))
        except ProtocolError as err:
            log.warning("skipping event: %s", err)
    return events


EVENT_COLUMNS = "id, ts, kind, actor, subject, recipient, payload"


def events_after(
    conn: sqlite3.Connection, after_id: int, limit: int = 500, flt: EventFilter | None = None,
    until: int | None = None,
) -> list[Event]:
    """Matching events with after_id < id (<= until), oldest first, at most `limit`."""
    where, params = (flt or EventFilter()).sql()
    if until is not None:
        where += " AND id <= ?"
        params.append(until)
    cur = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? AND {where} ORDER BY id LIMIT ?",
        (after_id, *params, limit),
    )
    return decode_rows(cur.fetchall())


def recent_events(conn: sqlite3.Connection, limit: int, subjects: Sequence[str] = ()) -> list[Event]:
    """The latest `limit` events (about these subjects, if given), oldest first."""
    where, params = "1", []
    if subjects:
        where, params = f"subject IN ({','.join('?' * len(subjects))})", list(subjects)
    cur = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id DESC LIMIT ?",
                       (*params, limit))
    return decode_rows(list(reversed(cur.fetchall())))


def subtree(conn: sqlite3.Connection, task_id: int, most: int = 200) -> list[int]:
    """The task and its subtasks, to any depth (at most `most` ids)."""
    cur = conn.execute(
        "WITH RECURSIVE down(id) AS (SELECT id FROM tasks WHERE id = ? "
        "UNION SELECT t.id FROM tasks t JOIN down ON t.parent_id = down.id) SELECT id FROM down LIMIT ?",
        (task_id, most),
    )
    return [row[0] for row in cur.fetchall()]


def last_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
    return int(row[0])


def cursor(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT last_event_id FROM cursors WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def task(conn: sqlite3.Connection, task_id: int) -> Task | None:
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return rows.task(row) if row else None


def tasks(conn: sqlite3.Connection, *, owner: str | None = None,
          statuses: Sequence[str] = ()) -> list[Task]:
    sql, params = "SELECT * FROM tasks WHERE 1", []  # type: ignore[var-annotated]
    if owner is not None:
        sql += " AND owner = ?"
        params.append(owner)
    if statuses:
        sql += f" AND status IN ({','.join('?' * len(statuses))})"
        params.extend(statuses)
    return [rows.task(r) for r in conn.execute(sql + " ORDER BY id", params).fetchall()]


def task_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        r[0]: r[1] for r in conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status")
    }


def approvals(conn: sqlite3.Connection, *, status: str | None = "pending") -> list[Approval]:
    if status is None:
        cur = conn.execute("SELECT * FROM approvals ORDER BY id")
    else:
        cur = conn.execute("SELECT * FROM approvals WHERE status = ? ORDER BY id", (status,))
    return [rows.approval(r) for r in cur.fetchall()]


def approval(conn: sqlite3.Connection, approval_id: int) -> Approval | None:
    row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    return rows.approval(row) if row else None


def rules(conn: sqlite3.Connection) -> list[PermissionRule]:
    return [rows.rule(r) for r in conn.execute("SELECT * FROM permission_rules ORDER BY id")]


def agent_statuses(conn: sqlite3.Connection) -> dict[str, AgentStatus]:
    return {
        r["agent"]: rows.agent_status(r)
        for r in conn.execute("SELECT * FROM agent_status ORDER BY agent")
    }


def tool_calls(conn: sqlite3.Connection, *, status: str | None = None) -> list[ToolCall]:
    if status is None:
        cur = conn.execute("SELECT * FROM tool_calls ORDER BY id")
    else:
        cur = conn.execute("SELECT * FROM tool_calls WHERE status = ? ORDER BY id", (status,))
    return [rows.tool_call(r) for r in cur.fetchall()]


def task_tool_calls(conn: sqlite3.Connection, task_id: int, limit: int = 200) -> list[ToolCall]:
    """A task's latest `limit` tool calls, oldest first."""
    cur = conn.execute("SELECT * FROM tool_calls WHERE task_id = ? ORDER BY id DESC LIMIT ?",
                       (task_id, limit))
    return [rows.tool_call(r) for r in reversed(cur.fetchall())]


def messages(conn: sqlite3.Connection, channel: str, limit: int = 50) -> list[ChannelMessage]:
    cur = conn.execute(
        "SELECT m.* FROM messages m JOIN channels c ON c.id = m.channel_id "
        "WHERE c.name = ? AND m.deleted = 0 ORDER BY m.id DESC LIMIT ?",
        (channel.lstrip("#"), limit),
    )
    return [rows.message(r) for r in reversed(cur.fetchall())]


def direct_messages(conn: sqlite3.Connection, member: str, limit: int = 50, *,
                    received_only: bool = False) -> list[ChannelMessage]:
    """The latest direct messages to `member` (and from it, unless received_only), oldest first."""
    where = "recipient = ?" if received_only else "(recipient = ? OR (sender = ? AND recipient IS NOT NULL))"
    params: tuple[object, ...] = (member,) if received_only else (member, member)
    cur = conn.execute(
        f"SELECT * FROM messages WHERE {where} AND deleted = 0 ORDER BY id DESC LIMIT ?", (*params, limit),
    )
    return [rows.message(r) for r in reversed(cur.fetchall())]


def schedules(conn: sqlite3.Connection) -> list[Schedule]:
    cur = conn.execute("SELECT * FROM schedules ORDER BY agent, name")
    return [rows.schedule(r) for r in cur.fetchall()]


def due_schedules(conn: sqlite3.Connection, now: float) -> list[Schedule]:
    cur = conn.execute(
        "SELECT * FROM schedules WHERE enabled = 1 AND next_run_at <= ? ORDER BY next_run_at",
        (now,),
    )
    return [rows.schedule(r) for r in cur.fetchall()]


def search_memory(
    conn: sqlite3.Connection, text: str, *, agent: str | None = None, limit: int = 10,
    include_compacted: bool = False,
) -> list[Memory]:
    """Full-text search: an agent sees its own entries and shared ones."""
    return [m for m, _ in memory_matches(conn, text, agent=agent, limit=limit,
                                         include_compacted=include_compacted)]


def memory_matches(
    conn: sqlite3.Connection, text: str, *, agent: str | None = None, limit: int = 10,
    include_compacted: bool = False,
) -> list[tuple[Memory, float]]:
    """Like search_memory, with each entry's FTS5 relevance (bm25; higher is better)."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
    if not words:
        return []
    match = " OR ".join(f'"{w}"' for w in words)
    sql = (
        "SELECT m.*, f.rank AS rank FROM memory_fts f JOIN memory m ON m.id = f.rowid "
        "WHERE memory_fts MATCH ?"
    )
    params: list[object] = [match]
    sql += _visible_to(agent, include_compacted, params)
    sql += " ORDER BY f.rank LIMIT ?"
    params.append(limit)
    return [(rows.memory(r), -float(r["rank"])) for r in conn.execute(sql, params).fetchall()]


def _visible_to(agent: str | None, include_compacted: bool, params: list[object]) -> str:
    """The memory rows `agent` may see (its own and shared; all for None), active ones
    unless compacted are asked for: SQL to append to a WHERE, its parameters added."""
    sql = ""
    if agent is not None:
        sql += " AND (m.agent = ? OR m.scope = 'shared')"
        params.append(agent)
    if not include_compacted:
        sql += " AND m.compacted_into IS NULL"
    return sql


def memory_nearest(
    conn: sqlite3.Connection, embedding: bytes, *, agent: str | None = None, limit: int = 10,
    include_compacted: bool = False,
) -> list[tuple[Memory, float]] | None:
    """The entries nearest in meaning to `embedding` (a query's vector), each with its cosine
    similarity, best first; the same visibility as search_memory. None on a connection
    without vec_distance_cosine (database.load_vector_functions was not run on it)."""
    sql = ("SELECT m.*, vec_distance_cosine(v.embedding, ?) AS distance "
           "FROM memory_vectors v JOIN memory m ON m.id = v.memory_id WHERE 1")
    params: list[object] = [embedding]
    sql += _visible_to(agent, include_compacted, params)
    sql += " ORDER BY distance LIMIT ?"
    params.append(limit)
    try:
        found = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as err:
        if "vec_distance_cosine" in str(err):
            return None
        raise
    return [(rows.memory(r), 1.0 - float(r["distance"])) for r in found]


def memories_without_vectors(conn: sqlite3.Connection, model: str, limit: int = 64) -> list[Memory]:
    """Entries with no vector from `model` yet (written while no indexer ran), oldest first."""
    found = conn.execute(
        "SELECT m.* FROM memory m LEFT JOIN memory_vectors v ON v.memory_id = m.id AND v.model = ? "
        "WHERE v.memory_id IS NULL ORDER BY m.id LIMIT ?", (model, limit),
    ).fetchall()
    return [rows.memory(r) for r in found]


def instance(conn: sqlite3.Connection) -> sqlite3.Row | None:
    return conn.execute("SELECT pid, started_at, heartbeat_at, meter FROM instance").fetchone()


def messages_without_task(conn: sqlite3.Connection, agents: Sequence[str]) -> list[int]:
    """Direct messages to an agent, about no task, that no task answers yet: work asked
    for while agentdeck was down."""
    if not agents:
        return []
    marks = ",".join("?" * len(agents))
    found = conn.execute(
        f"SELECT m.id FROM messages m LEFT JOIN tasks t ON t.message_id = m.id WHERE t.id IS NULL "
        f"AND m.recipient IN ({marks}) AND m.task_id IS NULL AND m.sender != m.recipient "
        "AND m.deleted = 0 ORDER BY m.id", tuple(agents),
    ).fetchall()
    return [row[0] for row in found]


def checkpoints(conn: sqlite3.Connection, task_ids: Sequence[int], *,
                kinds: Sequence[str] = ("call", "undo", "redo")) -> list[Checkpoint]:
    """The checkpoints of these tasks, oldest first."""
    if not task_ids:
        return []
    found: list[Checkpoint] = []
    for start in range(0, len(task_ids), 500):
        part = list(task_ids[start:start + 500])
        cur = conn.execute(
            f"SELECT * FROM checkpoints WHERE task_id IN ({','.join('?' * len(part))}) "
            f"AND kind IN ({','.join('?' * len(kinds))}) ORDER BY id", (*part, *kinds))
        found += [rows.checkpoint(r) for r in cur.fetchall()]
    return sorted(found, key=lambda c: c.id)


def checkpoints_after(conn: sqlite3.Connection, after_id: int, paths: Sequence[str] = (),
                      limit: int = 10_000) -> list[Checkpoint]:
    """Call checkpoints newer than `after_id` (to name who changed a file since)."""
    cur = conn.execute("SELECT * FROM checkpoints WHERE id > ? AND kind = 'call' ORDER BY id LIMIT ?",
                       (after_id, limit))
    found = [rows.checkpoint(r) for r in cur.fetchall()]
    if not paths:
        return found
    wanted = set(paths)
    return [c for c in found if any(f.path in wanted for f in c.files)]


def tasks_with_changes(conn: sqlite3.Connection, limit: int = 50) -> list[tuple[int, int]]:
    """(task id, number of call checkpoints that changed files) of the latest tasks that did."""
    cur = conn.execute(
        "SELECT task_id, COUNT(*) FROM checkpoints WHERE kind = 'call' AND task_id IS NOT NULL "
        "AND files != '[]' GROUP BY task_id ORDER BY MAX(id) DESC LIMIT ?", (limit,))
    return [(int(a), int(b)) for a, b in cur.fetchall()]


def mcp_tools(conn: sqlite3.Connection, server: str | None = None) -> list[McpTool]:
    """MCP tools as recorded (pinned and last listed), by server and name."""
    if server is None:
        cur = conn.execute("SELECT * FROM mcp_tools ORDER BY server, name")
    else:
        cur = conn.execute("SELECT * FROM mcp_tools WHERE server = ? ORDER BY name", (server,))
    return [rows.mcp_tool(r) for r in cur.fetchall()]
