"""`agentdeck policy check` and `tool run`: the permission gate from the command line
(`agentdeck rules` edits what it decides by)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from agents.errors import AgentdeckError, InvalidArgument
from agents.gate import Gate, config_rules, make_policy, stored_rules
from agents.policy.decide import decide
from agents.protocol import OWNER, SYSTEM, Approval
from agents.runtime.approval_text import approval_lines
from agents.safe_text import safe_text
from agents.store import AsyncStore, queries
from agents.store import reducers as r
from agents.tools import TOOLS
from agents.tools.base import Tool
from app.args import Parser, add_command, add_json_flag, positive_int
from app.context import Context
from app.render import line, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "policy", None, "ask the gate without running anything")
    policy = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True, parser_class=Parser)
    s = policy.add_parser("check", help="what the gate would decide for AGENT TOOL ARGS_JSON")
    s.set_defaults(handler=cmd_policy_check)
    _add_call(s)

    p = add_command(sub, "tool", None, "run one tool call as an agent, through the whole gate")
    tool = p.add_subparsers(dest="tool_command", metavar="ACTION", required=True, parser_class=Parser)
    s = tool.add_parser("run", help="run TOOL as AGENT with ARGS_JSON; asks when the gate asks")
    s.set_defaults(handler=cmd_tool_run)
    _add_call(s)
    s.add_argument("--approve-via", choices=["cli"], help="wait for `agentdeck approve/deny ID` from "
                   "another terminal instead of asking here")
    s.add_argument("--reason", metavar="TEXT", help="why the call is made (shown with the approval)")
    s.add_argument("--task", type=positive_int, metavar="ID", help="the agent's current task")


def _add_call(p: argparse.ArgumentParser) -> None:
    """One tool call: AGENT TOOL ARGS_JSON."""
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("tool", metavar="TOOL")
    p.add_argument("args_json", metavar="ARGS_JSON", help='e.g. \'{"path": "README.md"}\'')
    add_json_flag(p)


def parse_arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"ARGS_JSON is not JSON: {err.msg} at character {err.pos}",
                              exit_code=2) from None
    if not isinstance(value, dict):
        raise InvalidArgument("ARGS_JSON must be a JSON object, e.g. '{\"path\": \"README.md\"}'",
                              exit_code=2)
    return value


# --- policy check ---


def cmd_policy_check(ctx: Context, args: argparse.Namespace) -> int:
    arguments = parse_arguments(args.args_json)
    rules = [*config_rules(ctx.config), *stored_rules(ctx.store.read(queries.rules))]
    extra = asyncio.run(_mcp_offered(ctx)) if args.tool.startswith("mcp.") else None
    decision = decide(make_policy(ctx.config, ctx.home, rules, extra_tools=extra), args.agent, args.tool,
                      arguments)
    if args.json:
        print_json(decision)
        return 0
    line(f"decision:    {decision.decision}")
    line(f"why:         {decision.reason}")
    line(f"rule:        {decision.rule or '-'}")
    line(f"resolves to: {decision.resolved or '-'}")
    if decision.decision == "ask":
        always = f"saves {decision.always_rule!r}" if decision.always_rule else "not offered"
        line(f"always:      {always}")
    return 0


async def _mcp_offered(ctx: Context) -> dict[str, dict[str, Tool]]:
    """Each agent's MCP tools as offered now, from the recorded pins: no server started
    (their schemas are what the gate parses the arguments with)."""
    from agents.mcp.hub import McpHub  # the SDK is heavy: only for an MCP tool

    ctx.ensure_home()
    store = await AsyncStore(ctx.db_path, ctx.config.enabled_agents()).open()
    try:
        hub = McpHub(ctx.config, ctx.home, store)
        await hub.reload_pins()
        return {agent: {t.name: t for t in hub.tools_for(agent)} for agent in ctx.config.enabled_agents()}
    finally:
        await store.close()


# --- tool run ---


def cmd_tool_run(ctx: Context, args: argparse.Namespace) -> int:
    arguments = parse_arguments(args.args_json)
    config = ctx.config
    if args.agent not in config.enabled_agents():
        raise InvalidArgument(f"unknown agent {args.agent!r} (agents: {', '.join(config.enabled_agents())})",
                              exit_code=2)
    if args.tool not in TOOLS:
        raise InvalidArgument(f"unknown tool {args.tool!r} (tools: {', '.join(TOOLS)})", exit_code=2)
    ctx.ensure_home()
    return asyncio.run(_tool_run(ctx, args, arguments))


async def _tool_run(ctx: Context, args: argparse.Namespace, arguments: dict[str, Any]) -> int:
    store = await AsyncStore(ctx.db_path, ctx.config.enabled_agents()).open()
    try:
        gate = Gate(store, ctx.config, ctx.home)
        outcome = await gate.call(args.agent, args.tool, arguments, reason=args.reason or "",
                                  task_id=args.task, on_ask=_asker(store, args.approve_via))
    finally:
        await store.close()
    result = outcome.result
    if args.json:
        print_json({"decision": outcome.decision, "status": result.status, "text": result.text,
                    "truncated": result.truncated, "call_id": outcome.call_id,
                    "approval": outcome.approval})
    else:
        sys.stdout.write(safe_text(result.text, keep_newlines=True) + "\n")
        if result.status != "ok":
            line(f"[{result.status}]")
    return 0 if result.status == "ok" else 1


def _asker(store: AsyncStore, via: str | None):
    async def by_cli(approval: Approval) -> None:
        for text in approval_lines(approval):
            _err(text)
        _err(f"waiting: `agentdeck approve {approval.id}` (--always to save the rule) or "
             f"`agentdeck deny {approval.id}` in another terminal")

    async def by_terminal(approval: Approval) -> None:
        for text in approval_lines(approval):
            _err(text)
        offer = "[y]es once, [s]ession, " + ("[a]lways, " if approval.always_rule else "") + "[N]o"
        answer = (await asyncio.to_thread(_prompt, f"{offer}? ")).strip().lower()
        scope = {"y": "once", "yes": "once", "s": "session", "a": "always"}.get(answer)
        if scope == "always" and not approval.always_rule:
            scope = None
        try:
            await store.write(r.decide_approval, OWNER, approval.id, scope is not None, scope=scope or "once")
        except AgentdeckError as err:  # decided or expired meanwhile
            _err(str(err))

    async def refuse(approval: Approval) -> None:
        for text in approval_lines(approval):
            _err(text)
        _err("needs approval, and there is no terminal to ask: denied (use --approve-via cli to wait "
             "for `agentdeck approve` from another terminal)")
        await store.write(r.decide_approval, SYSTEM, approval.id, False, decided_by="headless_policy")

    if via == "cli":
        return by_cli
    return by_terminal if sys.stdin.isatty() else refuse


def _prompt(question: str) -> str:
    sys.stderr.write(safe_text(question))
    sys.stderr.flush()
    return sys.stdin.readline()


def _err(text: str) -> None:
    sys.stderr.write(safe_text(text) + "\n")
    sys.stderr.flush()
