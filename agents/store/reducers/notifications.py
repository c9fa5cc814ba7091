"""Notifications and their delivery: one row per event and channel (webhook, desktop,
terminal), from pending through retrying to sent, failed or skipped, with the attempts
made and the last HTTP status, so `agentdeck approvals` can say whether the person was
told. Rows only: a delivery is not an event of the crew's (nothing reacts to it)."""

from __future__ import annotations

from typing import Literal

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.store.tx import Tx

Channel = Literal["webhook", "desktop", "terminal"]
DeliveryStatus = Literal["pending", "sent", "retrying", "failed", "skipped"]
CHANNELS = frozenset(("webhook", "desktop", "terminal"))
STATUSES = frozenset(("pending", "sent", "retrying", "failed", "skipped"))
FINAL = frozenset(("sent", "failed", "skipped"))
MAX_DETAIL = 1_000  # the attempts' outcomes, one line


def record_notification(tx: Tx, actor: str, event: str, subject: str, channel: Channel, *,
                        approval_id: int | None = None, status: DeliveryStatus = "pending",
                        detail: str = "") -> int:
    """A notification about to be delivered on `channel` (or already skipped, with why)."""
    _check(actor, status)
    if channel not in CHANNELS:
        raise InvalidArgument(f"unknown notification channel {channel!r}")
    if approval_id is not None:
        tx.row("approvals", approval_id)
    cur = tx.execute(
        "INSERT INTO notifications (event, subject, approval_id, channel, status, detail, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (event, subject, approval_id, channel, status, detail[:MAX_DETAIL], tx.now, tx.now))
    assert cur.lastrowid is not None
    return cur.lastrowid


def update_notification(tx: Tx, actor: str, notification_id: int, *, status: DeliveryStatus,
                        attempts: int, http_status: int | None = None, detail: str = "") -> None:
    """An attempt's outcome (`retrying`) or the final one (`sent`, `failed`, `skipped`)."""
    _check(actor, status)
    row = tx.row("notifications", notification_id)
    if row["status"] in FINAL:
        raise InvalidTransition(f"notification {notification_id} is {row['status']} already")
    tx.execute("UPDATE notifications SET status = ?, attempts = ?, http_status = ?, detail = ?, "
               "updated_at = ? WHERE id = ?",
               (status, attempts, http_status, detail[:MAX_DETAIL], tx.now, notification_id))


def _check(actor: str, status: str) -> None:
    if not Tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not record notifications")
    if status not in STATUSES:
        raise InvalidArgument(f"unknown notification status {status!r}")
