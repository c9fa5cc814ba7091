"""Commands that read or write the store: send, tasks, status, approvals, approve, deny.

They work directly on the database whether or not an instance is running; a running
instance sees their writes within a second (it polls PRAGMA data_version).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agents.errors import InvalidArgument
from agents.health import status_report
from agents.protocol import OWNER, Task, to_builtins
from agents.store import queries
from agents.store.reducers import create_task, decide_approval
from app.context import Context
from app.render import ago, print_json, shorten, table

TITLE_WIDTH = 120


def _clean(text: str) -> str:
    """Arguments that were not valid UTF-8 arrive as lone surrogates; keep what we can."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def cmd_send(ctx: Context, args: argparse.Namespace) -> int:
    text = _clean(" ".join(args.text)).strip()
    if not text:
        raise InvalidArgument("nothing to send: give the request as TEXT")
    agents = ctx.config.enabled_agents()
    if args.to is not None and args.to not in agents:
        known = ", ".join(agents)
        raise InvalidArgument(f"unknown agent {args.to!r} (agents: {known})", exit_code=2)
    first_line = text.splitlines()[0]
    title = first_line if len(first_line) <= TITLE_WIDTH else first_line[: TITLE_WIDTH - 1] + "…"
    task = ctx.store.write(
        create_task, OWNER, title, body=text, owner=args.to, priority=args.priority
    )
    print(task.id)
    return 0


def _task_tree(tasks: list[Task]) -> list[dict[str, Any]]:
    nodes = {t.id: {**to_builtins(t), "children": []} for t in tasks}  # type: ignore[dict-item]
    roots = []
    for t in tasks:
        parent = nodes.get(t.parent_id) if t.parent_id is not None else None
        (parent["children"] if parent else roots).append(nodes[t.id])
    return roots


def _print_tree(nodes: list[dict[str, Any]], prefix: str = "", top: bool = True) -> None:
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        branch = "" if top else ("└─ " if last else "├─ ")
        owner = node["owner"] or "(unassigned)"
        print(f"{prefix}{branch}#{node['id']} [{node['status']}] {owner}: {shorten(node['title'], 70)}")
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        _print_tree(node["children"], child_prefix, top=False)


def cmd_tasks(ctx: Context, args: argparse.Namespace) -> int:
    statuses = args.status or ()
    if args.owner is not None and args.owner not in ctx.config.agents:
        raise InvalidArgument(f"unknown agent {args.owner!r} (agents: {', '.join(ctx.config.agents)})",
                              exit_code=2)
    tasks = ctx.store.read(queries.tasks, owner=args.owner, statuses=statuses)
    if args.tree:
        tree = _task_tree(tasks)
        print_json(tree) if args.json else _print_tree(tree)
        return 0
    if args.json:
        print_json(tasks)
        return 0
    if not tasks:
        print("no tasks")
        return 0
    table(
        ["id", "parent", "owner", "status", "pri", "created", "title"],
        [
            (t.id, t.parent_id or "", t.owner or "-", t.status, t.priority, ago(t.created_at),
             shorten(t.title, 60))
            for t in tasks
        ],
    )
    return 0


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.store.read(status_report, list(ctx.config.enabled_agents()))
    if args.json:
        print_json(report)
        return 0
    inst = report.instance
    print(f"instance: running, pid {inst.pid}" if inst else "instance: not running")
    table(
        ["agent", "state", "health", "task", "heartbeat"],
        [(a.name, a.state, a.health, a.task_id or "", ago(a.heartbeat_at)) for a in report.agents],
    )
    busy = ", ".join(f"{n} {s}" for s, n in report.tasks.items() if n)
    print(f"tasks: {busy or 'none'}")
    print(f"pending approvals: {report.pending_approvals}")
    return 0


def cmd_approvals(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.store.read(queries.approvals, status=None if args.all else "pending")
    if args.json:
        print_json(items)
        return 0
    if not items:
        print("no pending approvals" if not args.all else "no approvals")
        return 0
    now = time.time()
    table(
        ["id", "agent", "tool", "resolves to", "reason", "status", "expires"],
        [
            (a.id, a.agent, a.tool, shorten(a.resolved, 50), shorten(a.reason, 40), a.status,
             f"in {int(a.expires_at - now)}s" if a.status == "pending" else "")
            for a in items
        ],
    )
    return 0


def _decide(ctx: Context, approval_id: int, approve: bool, always: bool = False) -> int:
    approval = ctx.store.write(
        decide_approval, OWNER, approval_id, approve, scope="always" if always else "once"
    )
    verb = "approved" if approve else "denied"
    extra = " (saved as an allow rule)" if always else ""
    sys.stdout.write(f"approval {approval.id} {verb}{extra}: {approval.agent} {approval.tool} "
                     f"{shorten(approval.resolved, 60)}\n")
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    return _decide(ctx, args.id, True, args.always)


def cmd_deny(ctx: Context, args: argparse.Namespace) -> int:
    return _decide(ctx, args.id, False)
