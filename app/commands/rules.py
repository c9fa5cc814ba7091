"""`agentdeck rules`: the permission rules the gate decides by: list, add, remove."""

from __future__ import annotations

import argparse

from agents.errors import InvalidArgument
from agents.gate import config_rules, stored_rules
from agents.protocol import OWNER
from agents.store import queries
from agents.store import reducers as r
from agents.tools import TOOLS
from app.args import Parser, add_command, add_json_flag, positive_int
from app.context import Context
from app.render import line, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "rules", cmd_rules, "permission rules: list, add, remove")
    add_json_flag(p)
    rules = p.add_subparsers(dest="rules_command", metavar="ACTION", parser_class=Parser)
    s = rules.add_parser("add", help="add a rule: AGENT (or *) TOOL PATTERN allow|ask|deny")
    s.add_argument("agent", metavar="AGENT")
    s.add_argument("tool", metavar="TOOL")
    s.add_argument("pattern", metavar="PATTERN", help="run_shell: a command prefix; file tools: a path glob")
    s.add_argument("decision", choices=["allow", "ask", "deny"])
    s = rules.add_parser("remove", help="delete a rule of your own (config rules live in config.toml)")
    s.add_argument("id", type=positive_int, metavar="ID")


def cmd_rules(ctx: Context, args: argparse.Namespace) -> int:
    action = getattr(args, "rules_command", None)
    if action == "add":
        if args.agent != "*" and args.agent not in ctx.config.agents:
            known = ", ".join(ctx.config.agents)
            raise InvalidArgument(f"unknown agent {args.agent!r} (agents: {known}, or *)", exit_code=2)
        if args.tool not in TOOLS:
            raise InvalidArgument(f"unknown tool {args.tool!r} (tools: {', '.join(TOOLS)})", exit_code=2)
        rule = ctx.store.write(r.add_rule, OWNER, args.agent, args.tool, args.pattern, args.decision)
        line(f"rule {rule.id}: {rule.agent} {rule.tool} {rule.pattern!r} {rule.decision}")
        return 0
    if action == "remove":
        ctx.store.write(r.remove_rule, OWNER, args.id)
        line(f"rule {args.id} removed")
        return 0
    rules = [*config_rules(ctx.config), *stored_rules(ctx.store.read(queries.rules))]
    if args.json:
        print_json(rules)
        return 0
    table(["id", "agent", "tool", "pattern", "decision", "source"],
          [(rule.id if rule.id is not None else "-", rule.agent, rule.tool, rule.pattern, rule.decision,
            rule.source) for rule in rules])
    return 0
