"""`agentdeck hooks test EVENT`: run the hooks that match a sample event, and say how each
ended: before a real call or task meets them."""

from __future__ import annotations

import argparse
import asyncio
from typing import get_args

from agents.config.schema import HookEvent as HookEventName
from agents.errors import InvalidArgument
from agents.hooks import HookEvent, HookOutcome, matching, run_hook
from app.args import Parser, add_command, add_json_flag
from app.context import Context
from app.render import line, print_json, shorten, table

EVENTS: tuple[str, ...] = get_args(HookEventName)
SAMPLE_ARGUMENTS = {"run_shell": {"command": "echo hello"}, "read_file": {"path": "README.md"},
                    "write_file": {"path": "notes.txt", "content": "hello"}}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "hooks", None, "the [[hooks]] of the config: test them on a sample event")
    hooks = p.add_subparsers(dest="hooks_command", metavar="ACTION", required=True, parser_class=Parser)
    s = hooks.add_parser("test", help="run the hooks matching a sample EVENT; exit 1 if a tool.before "
                         "hook would deny")
    s.set_defaults(handler=cmd_hooks_test)
    s.add_argument("event", metavar="EVENT", choices=EVENTS, help=", ".join(EVENTS))
    s.add_argument("--agent", metavar="AGENT", help="the event's agent (default: the first configured)")
    s.add_argument("--tool", metavar="TOOL", help="tool.* and approval.*: the call's tool "
                   "(default: run_shell)")
    add_json_flag(s)


def sample_event(ctx: Context, event: str, agent: str | None, tool: str | None) -> HookEvent:
    """An event as the gate or the host would send it, with made-up details."""
    if agent is None:
        agent = next(iter(ctx.config.agents), None)
    elif agent not in ctx.config.agents:
        raise InvalidArgument(f"unknown agent {agent!r}", exit_code=2)
    if event.startswith("tool.") or event.startswith("approval."):
        tool = tool or "run_shell"
        arguments: object = SAMPLE_ARGUMENTS.get(tool, {})
    elif tool:
        raise InvalidArgument(f"--tool: {event} events have no tool", exit_code=2)
    else:
        arguments = None
    status = {"tool.after": "ok", "task.done": "done", "task.failed": "failed", "task.created": "open",
              "approval.requested": "pending", "approval.decided": "approved"}.get(event)
    return HookEvent(
        event=event, agent=agent, tool=tool, arguments=arguments, task_id=1, status=status,
        approval_id=1 if event.startswith("approval.") else None,
        title="a sample task" if event.startswith("task.") else None,
        result={"tool.after": "hello\n[exit status 0]", "task.done": "a sample result",
                "task.failed": "a sample failure"}.get(event))


async def run_all(ctx: Context, event: HookEvent) -> list[HookOutcome]:
    """Each matching hook in turn, as the real event would run it (every one, even after a denial)."""
    hooks = matching(ctx.config.hooks, event.event, event.agent, event.tool)
    return [await run_hook(h, event, ctx.config, ctx.home, ctx.config.workspace_path()) for h in hooks]


def cmd_hooks_test(ctx: Context, args: argparse.Namespace) -> int:
    event = sample_event(ctx, args.event, args.agent, args.tool)
    outcomes = asyncio.run(run_all(ctx, event))
    denied = any(o.denies for o in outcomes)
    if args.json:
        print_json({"event": event, "hooks": outcomes, "denied": denied})
        return 1 if denied else 0
    if not outcomes:
        line(f"no hook matches {event.event} (agent {event.agent or '-'}, tool {event.tool or '-'})")
        return 0
    table(["HOOK", "OUTCOME", "EXIT", "TIME", "SAYS"], [
        (shorten(o.command, 40), _verdict(o), "-" if o.exit_status is None else o.exit_status,
         f"{o.duration_s:.2f} s", o.message) for o in outcomes])
    if denied:
        line(f"a {event.event} hook would deny this call")
    return 1 if denied else 0


def _verdict(outcome: HookOutcome) -> str:
    if outcome.denies:
        return "deny"
    if outcome.failure:
        return "failed"
    return "allow" if outcome.event == "tool.before" else "ok"
