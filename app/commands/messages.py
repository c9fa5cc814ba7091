"""Direct messages and channels from the command line: tell an agent something (it
becomes work for that agent, and its reply comes back), read what was said."""

from __future__ import annotations

import argparse
import sqlite3

from agents.errors import InvalidArgument
from agents.protocol import OWNER, to_builtins
from agents.store import queries
from agents.store.reducers import send_direct
from app.args import add_command, add_json_flag, clean_argument, positive_int
from app.context import Context
from app.render import line, print_json, shorten, table, when


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "tell", cmd_tell, "send AGENT a direct message; it becomes work for that agent")
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("text", nargs="+", metavar="TEXT")

    p = add_command(sub, "messages", cmd_messages, "your direct messages (replies), or a channel's")
    add_json_flag(p)
    p.add_argument("--channel", metavar="NAME", help="a channel instead, e.g. agent-logs")
    p.add_argument("--last", type=positive_int, default=30, metavar="N", help="how many (default 30)")


def cmd_tell(ctx: Context, args: argparse.Namespace) -> int:
    text = clean_argument(" ".join(args.text)).strip()
    if not text:
        raise InvalidArgument("nothing to say: give the message as TEXT")
    agents = ctx.config.enabled_agents()
    if args.agent not in agents:
        raise InvalidArgument(f"unknown agent {args.agent!r} (agents: {', '.join(agents)})", exit_code=2)
    msg = ctx.store.write(send_direct, OWNER, args.agent, text)
    # Said in words: a bare number would read as a task id.
    line(f"message {msg.id} sent to {args.agent}; it becomes {args.agent}'s work, and the reply "
         "comes back as a message: `agentdeck messages`")
    return 0


def cmd_messages(ctx: Context, args: argparse.Namespace) -> int:
    if args.channel:
        if not ctx.store.read(_channel_exists, args.channel.lstrip("#")):
            raise InvalidArgument(f"no channel #{args.channel.lstrip('#')}", exit_code=2)
        found = ctx.store.read(queries.messages, args.channel, args.last)
    else:
        found = ctx.store.read(queries.direct_messages, OWNER, args.last)
    if args.json:
        print_json([to_builtins(m) for m in found])
        return 0
    if not found:
        line("no messages")
        return 0
    table(["id", "when", "from", "to", "task", "message"],
          [[m.id, when(m.created_at), m.sender, m.recipient or f"#{args.channel.lstrip('#')}",
            m.task_id or "", shorten(m.body, 200)] for m in found])
    return 0


def _channel_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM channels WHERE name = ?", (name,)).fetchone() is not None
