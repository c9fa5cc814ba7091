"""Commands that read or write the store: send, tasks, status, approvals, approve, deny,
schedules.

They work directly on the database whether or not an instance is running; a running
instance sees their writes within a second (it polls PRAGMA data_version).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agents.errors import InvalidArgument
from agents.intake import read_request
from agents.protocol import OWNER, Schedule, Task, to_builtins
from agents.runtime.approval_text import approval_lines
from agents.runtime.liveness import status_report
from agents.safe_text import safe_json
from agents.store import queries
from agents.store.reducers import cancel_task, create_task, decide_approval, remove_schedule, set_schedule
from app.context import Context
from app.render import ago, line, listing, print_json, shorten, table, when


def clean_argument(text: str) -> str:
    """Arguments that were not valid UTF-8 arrive as lone surrogates; keep what we can."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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


def _task_tree(tasks: list[Task]) -> list[dict[str, Any]]:
    nodes = {t.id: {**to_builtins(t), "children": []} for t in tasks}  # type: ignore[dict-item]
    roots = []
    for t in tasks:
        parent = nodes.get(t.parent_id) if t.parent_id is not None else None
        (parent["children"] if parent else roots).append(nodes[t.id])
    return roots


def _print_tree(roots: list[dict[str, Any]]) -> None:
    """Depth first with an explicit stack: a tree of any depth (an old database may hold
    one deeper than the reducers now allow) never meets Python's recursion limit."""
    # (node, prefix of its line, prefix for its children, branch glyph)
    stack = [(node, "", "", "") for node in reversed(roots)]
    while stack:
        node, prefix, child_prefix, branch = stack.pop()
        owner = node["owner"] or "(unassigned)"
        line(f"{prefix}{branch}#{node['id']} [{node['status']}] {owner}: {shorten(node['title'], 70)}")
        children = node["children"]
        for i in reversed(range(len(children))):
            last = i == len(children) - 1
            stack.append((children[i], child_prefix, child_prefix + ("   " if last else "│  "),
                          "└─ " if last else "├─ "))


def _tree_json(roots: list[dict[str, Any]]) -> str:
    """The nested JSON of the tree, written iteratively for the same reason."""
    parts: list[str] = ["["]
    # Each entry: the siblings still to write, and how to close their list.
    stack: list[tuple[list[dict[str, Any]], str]] = [(list(reversed(roots)), "]")]
    first = True
    while stack:
        pending, closer = stack[-1]
        if not pending:
            stack.pop()
            parts.append(closer)
            first = False
            continue
        node = pending.pop()
        fields = safe_json({k: v for k, v in node.items() if k != "children"})
        parts.append(("" if first else ",") + fields[:-1] + ',"children":[')
        stack.append((list(reversed(node["children"])), "]}"))
        first = True
    return "".join(parts)


def cmd_tasks(ctx: Context, args: argparse.Namespace) -> int:
    statuses = args.status or ()
    if args.owner is not None and args.owner not in ctx.config.agents:
        raise InvalidArgument(f"unknown agent {args.owner!r} (agents: {', '.join(ctx.config.agents)})",
                              exit_code=2)
    tasks = ctx.store.read(queries.tasks, owner=args.owner, statuses=statuses)
    if args.tree:
        tree = _task_tree(tasks)
        if args.json:
            sys.stdout.write(_tree_json(tree) + "\n")
        else:
            _print_tree(tree)
        return 0
    listing(tasks, args.json, "no tasks", ["id", "parent", "owner", "status", "pri", "created", "title"],
            lambda t: (t.id, t.parent_id or "", t.owner or "-", t.status, t.priority, ago(t.created_at),
                       shorten(t.title, 60)))
    return 0


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.store.read(status_report, list(ctx.config.enabled_agents()))
    if args.json:
        print_json(report)
        return 0
    inst = report.instance
    line(f"instance: running, pid {inst.pid}" if inst else "instance: not running")
    table(
        ["agent", "state", "health", "task", "heartbeat"],
        [(a.name, a.state, a.health, a.task_id or "", ago(a.heartbeat_at)) for a in report.agents],
    )
    busy = ", ".join(f"{n} {s}" for s, n in report.tasks.items() if n)
    line(f"tasks: {busy or 'none'}")
    line(f"pending approvals: {report.pending_approvals}")
    return 0


def cmd_approvals(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.store.read(queries.approvals, status=None if args.all else "pending")
    if args.json:
        print_json(items)
        return 0
    if not items:
        line("no pending approvals" if not args.all else "no approvals")
        return 0
    now = time.time()
    for i, a in enumerate(items):
        if i:
            line()
        for text in approval_lines(a, now):
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


def cmd_schedules(ctx: Context, args: argparse.Namespace) -> int:
    action = getattr(args, "schedule_command", None)
    if action == "add":
        agents = ctx.config.enabled_agents()
        if args.agent not in agents:
            raise InvalidArgument(f"unknown agent {args.agent!r} (agents: {', '.join(agents)})",
                                  exit_code=2)
        if (args.every is None) == (args.cron is None):
            raise InvalidArgument("give either SECONDS or --cron EXPR", exit_code=2)
        schedule = ctx.store.write(
            set_schedule, OWNER, args.agent, args.name, 60.0 if args.every is None else args.every,
            body=args.body or "",
            cron=args.cron,
        )
        how = f"on {schedule.cron!r}" if schedule.cron else f"every {schedule.interval_s:g} s"
        line(f"schedule {schedule.id}: {schedule.agent} {schedule.name} {how}, next at "
             f"{when(schedule.next_run_at)}")
        return 0
    if action == "remove":
        removed = ctx.store.write(remove_schedule, OWNER, args.id)
        line(f"schedule {removed.id} removed: {removed.agent} {removed.name}")
        return 0
    listing(ctx.store.read(queries.schedules), args.json, "no schedules",
            ["id", "agent", "name", "every", "next run", "last run", "state"],
            lambda s: (s.id, s.agent, shorten(s.name, 30), s.cron or f"{s.interval_s:g}s",
                       when(s.next_run_at), when(s.last_run_at), _schedule_state(s)))
    return 0


def _schedule_state(s: Schedule) -> str:
    if s.enabled:
        return "on"
    return f"off: {shorten(s.last_error, 50)}" if s.last_error else "off"


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    cancelled = ctx.store.write(cancel_task, OWNER, args.id)
    below = f" and {len(cancelled) - 1} subtask(s) below it" if len(cancelled) > 1 else ""
    line(f"task {args.id} cancelled{below}")
    return 0
