"""`agentdeck changes [TASK]`, `undo TASK` and `redo TASK`: what the agents' tool calls did
to the files, and taking it back."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from agents.checkpoints.changes import TaskChanges, as_json, task_changes, task_patch
from agents.checkpoints.undo import Outcome, Plan, restore
from agents.protocol import to_builtins
from agents.runtime.change_text import change_lines, summary_line
from agents.safe_text import safe_json, safe_text
from agents.store import AsyncStore, queries
from app.args import add_command, add_json_flag, positive_int
from app.context import Context
from app.render import line, print_json

DIFF_CAP = 2_000_000  # characters of `--diff` printed; past it, one line says how much is left
STATUS_WORDS = {"A": "added", "D": "deleted", "M": "modified", "T": "type changed"}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "changes", cmd_changes, "what a task's tool calls changed on disk (files, diff)")
    p.add_argument("task", type=positive_int, metavar="TASK", nargs="?",
                   help="a task (with its subtasks); none: the latest tasks that changed files")
    p.add_argument("--diff", action="store_true", help="print the unified diff too")
    add_json_flag(p)

    p = add_command(sub, "undo", cmd_undo, "put back every file TASK changed, as it was before the task")
    p.add_argument("task", type=positive_int, metavar="TASK")
    p.add_argument("--force", action="store_true", help="overwrite files changed since the task")
    add_json_flag(p)

    p = add_command(sub, "redo", cmd_redo, "undo an undo: TASK's changes back again")
    p.add_argument("task", type=positive_int, metavar="TASK")
    p.add_argument("--force", action="store_true", help="overwrite files changed since the undo")
    add_json_flag(p)


async def _with_store(ctx: Context, work: Callable[[AsyncStore], Awaitable[Any]]) -> Any:
    ctx.ensure_home()
    store = await AsyncStore(ctx.db_path, ctx.config.enabled_agents()).open()
    try:
        return await work(store)
    finally:
        await store.close()


def cmd_changes(ctx: Context, args: argparse.Namespace) -> int:
    if args.task is None:
        return _recent(ctx, args)

    async def work(store: AsyncStore) -> tuple[TaskChanges, str | None]:
        changes = await task_changes(store.read, ctx.home, args.task)
        return changes, (await task_patch(ctx.home, changes) if args.diff else None)

    changes, diff = asyncio.run(_with_store(ctx, work))
    if args.json:
        print_json(to_builtins(as_json(changes, diff)))
        return 0
    for text in change_lines(changes):
        line(text)
    if diff:
        _print_diff(diff)
    return 0


def _recent(ctx: Context, args: argparse.Namespace) -> int:
    async def work(store: AsyncStore) -> list[TaskChanges]:
        found = await store.read(queries.tasks_with_changes, 20)
        return [await task_changes(store.read, ctx.home, tid) for tid, _ in found]

    found = asyncio.run(_with_store(ctx, work))
    if args.json:
        print_json([to_builtins(as_json(c)) for c in found])
        return 0
    if not found:
        line("no task has changed a file yet")
        return 0
    for c in found:
        line(summary_line(c))
    return 0


def _print_diff(diff: str) -> None:
    shown = diff[:DIFF_CAP]
    sys.stdout.write(safe_text(shown, keep_newlines=True))
    if not shown.endswith("\n"):
        sys.stdout.write("\n")
    if len(diff) > DIFF_CAP:
        line(f"… {len(diff) - DIFF_CAP} more characters of diff not shown")


def cmd_undo(ctx: Context, args: argparse.Namespace) -> int:
    return _restore(ctx, args, "undo")


def cmd_redo(ctx: Context, args: argparse.Namespace) -> int:
    return _restore(ctx, args, "redo")


def _restore(ctx: Context, args: argparse.Namespace, kind: str) -> int:
    async def work(store: AsyncStore) -> tuple[Plan, Outcome]:
        return await restore(store.read, store.write, ctx.home, args.task, kind,  # type: ignore[arg-type]
                             force=args.force)

    plan, outcome = asyncio.run(_with_store(ctx, work))
    if args.json:
        sys.stdout.write(safe_json({
            "task": outcome.task_id, "kind": outcome.kind, "restored": outcome.restored,
            "already": outcome.already, "forced": outcome.forced, "checkpoints": outcome.checkpoints,
            "resumed": outcome.resumed,
            "not_restorable": [{"path": n.path, "reason": n.reason} for n in plan.not_restorable],
        }) + "\n")
        return 0
    done = "completed the interrupted " if outcome.resumed else ""
    line(safe_text(f"{done}{outcome.kind} of task {outcome.task_id}: {len(outcome.restored)} file(s) restored"
                   + (f", {len(outcome.already)} already so" if outcome.already else "")))
    for path in outcome.restored:
        line(safe_text(f"  {path}"))
    for path in outcome.forced:
        line(safe_text(f"  overwritten (--force): {path}"))
    for n in plan.not_restorable:
        line(safe_text(f"  not restored, never checkpointed: {n.path} ({n.reason})"))
    if outcome.kind == "undo":
        line(f"`agentdeck redo {outcome.task_id}` puts them back")
    return 0
