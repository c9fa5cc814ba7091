"""`agentdeck usage`: the token ledger: tokens, model time, calls and cost, grouped."""

from __future__ import annotations

import argparse

from agents.runtime import ledger
from app.args import add_command, add_json_flag
from app.context import Context
from app.render import line, print_json, shorten, table

HEADERS = ["prompt", "cached", "generated", "model s", "queue s", "calls", "cost"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "usage", cmd_usage, "the token ledger: tokens, model time and cost")
    add_json_flag(p)
    # Checked by the handler, not argparse: bad input is one line, exit 2.
    p.add_argument("--by", default="agent", metavar="|".join(ledger.GROUPS),
                   help="group by agent (default), task (with its subtasks), day or backend/model")
    p.add_argument("--since", metavar="WHEN", help="a date (2026-12-01) or an age (24h, 7d, 2w)")


def cmd_usage(ctx: Context, args: argparse.Namespace) -> int:
    since = ledger.parse_since(args.since) if args.since is not None else 0.0
    by = ledger.group_by(args.by)
    prices = ctx.config.prices
    rows = ctx.store.read(ledger.usage, by, since, prices)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        line("no model calls recorded" + (" since then" if args.since else ""))
        return 0
    shown = [*rows, ledger.total(rows)] if len(rows) > 1 else rows
    table([by, *HEADERS], [
        (shorten(r.group, 70), f"{r.prompt_tokens:,}", f"{r.cached_tokens:,}", f"{r.completion_tokens:,}",
         f"{r.decode_s:.1f}", f"{r.queue_s:.1f}", r.calls, ledger.cost_text(r.cost)) for r in shown])
    return 0
