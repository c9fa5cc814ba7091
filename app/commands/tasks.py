"""`agentdeck tasks` (a list or a tree) and `agentdeck cancel`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agents.errors import InvalidArgument
from agents.protocol import OWNER, TASK_STATUSES, Task, to_builtins
from agents.safe_text import safe_json
from agents.store import queries
from agents.store.reducers import cancel_task
from app.args import add_command, add_json_flag, positive_int
from app.context import Context
from app.render import ago, line, listing, shorten


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "tasks", cmd_tasks, "list tasks")
    add_json_flag(p)
    p.add_argument("--tree", action="store_true", help="show parent/child structure")
    p.add_argument("--owner", metavar="AGENT")
    p.add_argument("--status", action="append", choices=TASK_STATUSES, help="repeatable")

    p = add_command(sub, "cancel", cmd_cancel, "cancel a task and its subtasks; a running step is stopped")
    p.add_argument("id", type=positive_int, metavar="ID")


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


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    cancelled = ctx.store.write(cancel_task, OWNER, args.id)
    below = f" and {len(cancelled) - 1} subtask(s) below it" if len(cancelled) > 1 else ""
    line(f"task {args.id} cancelled{below}")
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
