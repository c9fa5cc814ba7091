"""`agentdeck log`: the event log as JSON lines or text; --follow keeps reading."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import sys

from agents.bus import Bus, Subscription
from agents.protocol import Event, to_builtins
from agents.runtime.event_text import event_text
from agents.safe_text import safe_json
from agents.store import AsyncStore, queries
from app.context import Context

PAGE = 1000
READER_CHECK_S = 0.1


def event_json(event: Event) -> str:
    return safe_json(
        {
            "id": event.id, "ts": event.ts, "kind": event.kind, "actor": event.actor,
            "subject": event.subject, "recipient": event.recipient,
            "payload": to_builtins(event.payload),
        }
    )


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


def reader_gone(fd: int) -> bool:
    """True once the read end of a pipe on `fd` is closed (`log -f | head -3` after its
    third line). A pipe reports that as POLLERR even while we have nothing to write."""
    poller = select.poll()
    poller.register(fd, 0)
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))


async def _follow(ctx: Context, after: int, as_json: bool) -> None:
    astore = await AsyncStore(ctx.db_path, ctx.config.enabled_agents()).open()
    bus = await Bus(astore).start()
    try:
        sub = await bus.subscribe(start=after)
        printer = asyncio.create_task(_print_events(sub, as_json))
        watcher = asyncio.create_task(_until_reader_gone(sys.stdout.fileno()))
        done, pending = await asyncio.wait({printer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a printer that failed (BrokenPipeError) reports it here
        if watcher in done:  # nobody reads any more: stop quietly, like `yes | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        await bus.close()
        await astore.close()


async def _print_events(sub: Subscription, as_json: bool) -> None:
    async for event in sub:
        _emit(event, as_json)
        sys.stdout.flush()


async def _until_reader_gone(fd: int) -> None:
    # Polled: nothing signals a pipe's reader leaving until we write to it.
    while True:
        if reader_gone(fd):
            return
        await asyncio.sleep(READER_CHECK_S)
