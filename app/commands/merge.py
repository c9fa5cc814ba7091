"""`agentdeck merge TASK`: a task worked in a git worktree, merged into the workspace's
checked-out branch; refused, with the files, when it would conflict."""

from __future__ import annotations

import argparse
import asyncio
import sys

from agents.checkpoints.worktrees import Merged, Worktrees, is_repository
from agents.errors import AgentdeckError
from agents.safe_text import safe_text
from app.args import add_command, positive_int
from app.context import Context
from app.render import line


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "merge", cmd_merge,
                    "merge a task's worktree branch (agentdeck/task-N) into the workspace")
    p.add_argument("task", type=positive_int, metavar="TASK")
    p.add_argument("--diff", action="store_true", help="show the branch's diff, merge nothing")


def cmd_merge(ctx: Context, args: argparse.Namespace) -> int:
    workspace = ctx.config.workspace_path()
    if not is_repository(workspace):
        raise AgentdeckError(f"{workspace} is not a git repository: no task worked in a worktree there",
                             exit_code=2)
    trees = Worktrees(ctx.home, workspace, ctx.config.checkpoints.worktree_keep_days)
    if args.diff:
        sys.stdout.write(safe_text(asyncio.run(trees.diff(args.task)), keep_newlines=True))
        return 0
    merged: Merged = asyncio.run(trees.merge(args.task))
    line(safe_text(f"merged {merged.branch} ({len(merged.files)} file(s)) as {merged.commit[:12]}; "
                   "its worktree and branch removed"))
    for path in merged.files:
        line(safe_text(f"  {path}"))
    return 0
