"""`agentdeck approvals`, `approve` and `deny`: the gate's pending questions, answered
from any terminal (a running instance sees the answer within a second)."""

from __future__ import annotations

import argparse
import time

from agents.notify.summary import notified_line
from agents.protocol import OWNER
from agents.runtime.approval_text import PREVIEW_HEADING, approval_lines, preview_lines
from agents.safe_text import safe_text
from agents.store import queries
from agents.store.queries_notifications import notifications_by_approval
from agents.store.reducers import decide_approval
from app.args import add_command, add_json_flag, positive_int
from app.context import Context
from app.render import line, print_json, shorten


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "approvals", cmd_approvals, "list pending approvals")
    add_json_flag(p)
    p.add_argument("--all", action="store_true", help="include decided ones")

    p = add_command(sub, "approve", cmd_approve, "approve a pending approval")
    p.add_argument("id", type=positive_int, metavar="ID")
    p.add_argument("--always", action="store_true", help="also save an allow rule for it")

    p = add_command(sub, "deny", cmd_deny, "deny a pending approval")
    p.add_argument("id", type=positive_int, metavar="ID")


def cmd_approvals(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.store.read(queries.approvals, status=None if args.all else "pending")
    if args.json:
        print_json(items)
        return 0
    if not items:
        line("no pending approvals" if not args.all else "no approvals")
        return 0
    now = time.time()
    told = ctx.store.read(notifications_by_approval, [a.id for a in items])
    for i, a in enumerate(items):
        if i:
            line()
        # Whether the person was told (webhook, desktop, terminal), before the long preview.
        lines = [*approval_lines(a, now, with_preview=False), f"  {safe_text(notified_line(told[a.id]))}"]
        if preview := preview_lines(a):
            lines += [PREVIEW_HEADING, *(f"    {text}" for text in preview)]
        for text in lines:
            line(text)
    return 0


def _decide(ctx: Context, approval_id: int, approve: bool, always: bool = False) -> int:
    approval = ctx.store.write(
        decide_approval, OWNER, approval_id, approve, scope="always" if always else "once"
    )
    verb = "approved" if approve else "denied"
    extra = " (saved as an allow rule)" if always else ""
    line(f"approval {approval.id} {verb}{extra}: {approval.agent} {approval.tool} "
         f"{shorten(approval.resolved, 60)}")
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    return _decide(ctx, args.id, True, args.always)


def cmd_deny(ctx: Context, args: argparse.Namespace) -> int:
    return _decide(ctx, args.id, False)
