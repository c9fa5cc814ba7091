"""`agentdeck log`: the event log as JSON lines or text; --follow keeps reading."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import sys

from agents.bus import Bus, Subscription
from agents.protocol import Event
from agents.runtime.event_text import event_text
from agents.store import AsyncStore, queries
from app.args import add_command, add_json_flag, positive_int
from app.context import Context
from app.render import event_json

PAGE = 1000
READER_CHECK_S = 0.1


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "log", cmd_log, "the event log")
    add_json_flag(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--since", type=positive_int, default=0, metavar="ID", help="events after ID")
    p.add_argument("--last", type=positive_int, metavar="N", help="only the last N events")


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
