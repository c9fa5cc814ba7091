"""An event as one terminal-safe line: the headless reporter, `agentdeck log` and the
TUI's log all show events this way."""

from __future__ import annotations

import json
import time

from agents.protocol import Event, to_builtins
from agents.safe_text import safe_text


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def event_text(event: Event) -> str:
    """One terminal-safe line: payloads carry titles, reasons and tool output."""
    payload = to_builtins(event.payload)
    assert isinstance(payload, dict)
    payload.pop("type", None)
    detail = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if len(detail) > 160:
        detail = detail[:159] + "…"
    to = f" → {event.recipient}" if event.recipient else ""
    return safe_text(
        f"{event.id:>6} {when(event.ts)} {event.kind:<18} {event.actor}{to} {event.subject} {detail}"
    )
