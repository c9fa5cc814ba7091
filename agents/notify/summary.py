"""One line saying whether the person was told of an approval, from its notification rows:
"notified: webhook sent (HTTP 200, 2 attempts)", "not notified: webhook failed (HTTP 500 ×5)",
"not notified (no channel configured)"."""

from __future__ import annotations

from collections.abc import Sequence

from agents.store.queries_notifications import Notification


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def channel_text(row: Notification) -> str:
    outcomes = [o for o in row.detail.split(", ") if o] if row.channel == "webhook" else []
    last = outcomes[-1] if outcomes else ""
    if row.status == "sent":
        if row.channel == "webhook":
            return f"webhook sent (HTTP {row.http_status}, {_plural(row.attempts, 'attempt')})"
        return f"{row.channel} sent"
    if row.status == "failed":
        if row.channel != "webhook":
            return f"{row.channel} failed ({row.detail})" if row.detail else f"{row.channel} failed"
        if not outcomes:
            return f"webhook failed ({row.detail or 'no attempt'})"
        same = len(set(outcomes)) == 1 and len(outcomes) == row.attempts
        return f"webhook failed ({last} ×{row.attempts})" if same else \
            f"webhook failed ({last}, {_plural(row.attempts, 'attempt')})"
    if row.status == "retrying":
        return f"{row.channel} retrying ({last or row.detail}, {_plural(row.attempts, 'attempt')} so far)"
    if row.status == "skipped":
        return f"{row.channel} skipped ({row.detail})" if row.detail else f"{row.channel} skipped"
    return f"{row.channel} pending"


def notified_line(rows: Sequence[Notification]) -> str:
    if not rows:
        return "not notified (no channel configured)"
    parts = "; ".join(channel_text(row) for row in rows)
    if any(row.status == "sent" for row in rows):
        return f"notified: {parts}"
    if any(row.status in ("pending", "retrying") for row in rows):
        return f"notifying: {parts}"
    return f"not notified: {parts}"
