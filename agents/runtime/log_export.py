"""The event log written out as JSON lines: a file in the home's `exports/` folder,
private (0600, the folder 0700) like everything in the home, each line escaped so that
no payload can carry a terminal escape into whatever later shows the file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agents.home import PRIVATE_DIR, write_private_text
from agents.protocol import Event, to_builtins
from agents.safe_text import safe_json
from agents.store import AsyncStore, queries

EXPORTS = "exports"
MOST_EVENTS = 1_000_000


def event_json(event: Event) -> str:
    """One event as one JSON line, terminal-safe."""
    return safe_json({"id": event.id, "ts": event.ts, "kind": event.kind, "actor": event.actor,
                      "subject": event.subject, "payload": to_builtins(event.payload)})


def write_log(home: Path, events: list[Event], when: float) -> Path:
    """Write `events` to `home/exports/log-YYYYmmdd-HHMMSS.jsonl` (local time `when`)."""
    folder = home / EXPORTS
    folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    path = folder / time.strftime("log-%Y%m%d-%H%M%S.jsonl", time.localtime(when))
    write_private_text(path, "".join(event_json(e) + "\n" for e in events) or "\n")
    return path


async def export_log(store: AsyncStore, home: Path, when: float | None = None) -> Path:
    """Read the whole event log and write it out, off the event loop's thread."""
    events = await store.read(queries.events_after, 0, MOST_EVENTS)
    return await asyncio.to_thread(write_log, home, events, time.time() if when is None else when)
