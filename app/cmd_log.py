"""`agentdeck log`: the event log as JSON lines or text; --follow keeps reading."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agents.bus import Bus
from agents.protocol import Event, to_builtins
from agents.store import AsyncStore, queries
from app.context import Context
from app.render import when

PAGE = 1000


def event_json(event: Event) -> str:
    return json.dumps(
        {
            "id": event.id, "ts": event.ts, "kind": event.kind, "actor": event.actor,
            "subject": event.subject, "recipient": event.recipient,
            "payload": to_builtins(event.payload),
        },
        ensure_ascii=False,
    )


def event_text(event: Event) -> str:
    payload = to_builtins(event.payload)
    assert isinstance(payload, dict)
    payload.pop("type", None)
    detail = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if len(detail) > 160:
        detail = detail[:159] + "…"
    to = f" → {event.recipient}" if event.recipient else ""
    return f"{event.id:>6} {when(event.ts)} {event.kind:<18} {event.actor}{to} {event.subject} {detail}"


def _emit(event: Event, as_json: bool) -> None:
    sys.stdout.write((event_json(event) if as_json else event_text(event)) + "\n")


def cmd_log(ctx: Context, args: argparse.Namespace) -> int:
    store = ctx.store
    head = store.read(queries.last_event_id)
    after = args.since
    if args.last is not None:
        after = max(after, head - args.last)
    # Page by id range, not by count: an event skipped as undecodable must not end the walk.
    while after < head:
        until = min(after + PAGE, head)
        for event in store.read(queries.events_after, after, PAGE, until=until):
            _emit(event, args.json)
        after = until
    sys.stdout.flush()
    if args.follow:
        ctx.close()
        try:
            asyncio.run(_follow(ctx, after, args.json))
        except KeyboardInterrupt:
            return 0
    return 0


async def _follow(ctx: Context, after: int, as_json: bool) -> None:
    astore = await AsyncStore(ctx.db_path, ctx.config.enabled_agents()).open()
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe(start=after)
        async for event in sub:
            _emit(event, as_json)
            sys.stdout.flush()
    finally:
        await bus.close()
        await astore.close()
