"""`agentdeck status`: agents, approvals and task counts, and whether an instance runs."""

from __future__ import annotations

import argparse

from agents.runtime.liveness import status_report
from app.args import add_command, add_json_flag
from app.context import Context
from app.render import ago, line, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "status", cmd_status, "agents, approvals and task counts")
    add_json_flag(p)


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
