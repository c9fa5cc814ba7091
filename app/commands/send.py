"""`agentdeck send`: give the crew a task (a request, from TEXT or stdin); prints its id.

Like every command that writes the store, it works on the database whether or not an
instance is running; a running instance sees the write within a second (it polls
PRAGMA data_version).
"""

from __future__ import annotations

import argparse
import sys

from agents.errors import InvalidArgument
from agents.intake import read_request
from agents.protocol import OWNER
from agents.store.reducers import create_task
from app.args import add_command, clean_argument, priority
from app.context import Context
from app.render import line


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "send", cmd_send, "give the crew a task; prints its id")
    p.add_argument("--to", metavar="AGENT", help="assign it to this agent (default: the router)")
    p.add_argument("--priority", type=priority, default=1, help="0..9, higher first (default 1)")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the request; - reads it from stdin "
                   "(the title is its first line)")


def cmd_send(ctx: Context, args: argparse.Namespace) -> int:
    agents = ctx.config.enabled_agents()
    if args.to is not None and args.to not in agents:  # before stdin is read
        known = ", ".join(agents)
        raise InvalidArgument(f"unknown agent {args.to!r} (agents: {known})", exit_code=2)
    if args.text == ["-"]:  # the convention: the request comes on stdin
        text = sys.stdin.buffer.read().decode("utf-8", "replace").strip()
        if not text:
            raise InvalidArgument("nothing to send: stdin was empty (`send -` reads the request from it)")
    else:
        text = clean_argument(" ".join(args.text)).strip()
        if not text:
            raise InvalidArgument("nothing to send: give the request as TEXT")
    request = read_request(text, agents, to=args.to)
    task = ctx.store.write(
        create_task, OWNER, request.title, body=request.body, owner=request.owner, priority=args.priority
    )
    line(task.id)
    return 0
