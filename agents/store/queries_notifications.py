"""Reading notification rows: what was delivered for an approval (or any subject)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec


class Notification(msgspec.Struct, kw_only=True):
    id: int
    event: str
    subject: str
    approval_id: int | None
    channel: str  # webhook, desktop, terminal
    status: str  # pending, retrying, sent, failed, skipped
    attempts: int
    http_status: int | None
    detail: str  # the attempts' outcomes in order ("HTTP 500, HTTP 200"), or why skipped
    created_at: float
    updated_at: float


def _row(row: sqlite3.Row) -> Notification:
    return Notification(**{k: row[k] for k in row.keys()})


def notifications_by_approval(conn: sqlite3.Connection,
                              approval_ids: Sequence[int]) -> dict[int, list[Notification]]:
    """Each approval's notification rows, by channel order of creation."""
    found: dict[int, list[Notification]] = {i: [] for i in approval_ids}
    ids = list(approval_ids)
    for start in range(0, len(ids), 500):  # SQLite's bound on variables
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT * FROM notifications WHERE approval_id IN ({marks}) ORDER BY id"
        for row in conn.execute(sql, chunk):
            found[row["approval_id"]].append(_row(row))
    return found


def notifications(conn: sqlite3.Connection, *, subject: str | None = None,
                  limit: int = 1_000) -> list[Notification]:
    """The newest rows (all, or one subject's: 'approval:3', 'task:12', 'backend:gpu'), oldest first."""
    if subject is None:
        cur = conn.execute("SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (limit,))
    else:
        cur = conn.execute("SELECT * FROM notifications WHERE subject = ? ORDER BY id DESC LIMIT ?",
                           (subject, limit))
    return [_row(r) for r in reversed(cur.fetchall())]
