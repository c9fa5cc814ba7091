"""`agentdeck mcp`: the MCP servers agents take tools from — their tools and each tool's
state (pinned, new, changed, gone) — `mcp approve SERVER` (a changed or new tool is offered
to agents only once a person approved it, seeing the change), and `mcp serve`: agentdeck
as an MCP server on stdin/stdout, for an editor or a coding agent to hand the crew work and
read what it did (agents/mcp/serve.py), until stdin closes, SIGTERM or Ctrl-C; stdout
carries the protocol only. `main()` runs `serve` without the CLI (home from
$AGENTDECK_HOME).
"""

from __future__ import annotations

import argparse
import sys

from agents.errors import AgentdeckError, InvalidArgument
from agents.protocol import OWNER, McpTool, to_builtins
from agents.runtime.mcp_text import change_lines
from agents.safe_text import safe_text
from agents.store import queries
from agents.store import reducers as r
from app.args import Parser, add_command, add_json_flag
from app.context import Context
from app.logs import setup_logging
from app.render import line, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "mcp", cmd_mcp, "MCP servers' tools for the agents: list, approve changes; serve")
    add_json_flag(p)
    actions = p.add_subparsers(dest="mcp_command", metavar="ACTION", required=False, parser_class=Parser)
    s = actions.add_parser("approve",
                           help="offer SERVER's new or changed tools to its agents (shows the change)")
    s.add_argument("server", metavar="SERVER")
    s.add_argument("--tool", action="append", metavar="NAME", help="only this tool (repeatable)")
    s.set_defaults(handler=cmd_mcp_approve)
    s = actions.add_parser("serve", help="agentdeck as an MCP server on stdio (send tasks, read results)")
    s.set_defaults(handler=cmd_mcp_serve)


def _server(ctx: Context, name: str) -> None:
    if name not in ctx.config.mcp:
        known = ", ".join(ctx.config.mcp) or "none configured"
        raise InvalidArgument(f"no MCP server {name!r} in the config (servers: {known})", exit_code=2)


def cmd_mcp(ctx: Context, args: argparse.Namespace) -> int:
    tools: list[McpTool] = ctx.store.read(queries.mcp_tools)
    if args.json:
        print_json([{"server": name, "transport": "stdio" if cfg.command else "http",
                     "enabled": cfg.enabled, "agents": cfg.agents,
                     "tools": [{**to_builtins(t), "state": t.state, "offered": t.offered}  # type: ignore[dict-item]
                               for t in tools if t.server == name]}
                    for name, cfg in ctx.config.mcp.items()])
        return 0
    if not ctx.config.mcp:
        line("no MCP servers configured ([mcp.NAME] in config.toml; see the README)")
        return 0
    for name, cfg in ctx.config.mcp.items():
        mine = [t for t in tools if t.server == name]
        where = safe_text((cfg.command and " ".join([cfg.command, *cfg.args])) or cfg.url)
        scope = ", ".join(cfg.agents) or "no agent (agents = [...])"
        state = "" if cfg.enabled else " [disabled]"
        line(f"{safe_text(name)}{state}: {where} — for {scope}; {len(mine)} tool(s) recorded")
        if not mine:
            line("  not listed yet: its tools are recorded (and pinned) when the instance first connects")
        for t in mine:
            line(safe_text(f"  {t.state:<8} mcp.{name}.{t.name}: {' '.join(t.description.split())[:100]}"))
        waiting = [t for t in mine if t.listed and not t.offered]
        if waiting:
            line(f"  withheld from agents until approved: `agentdeck mcp approve {name}`")
    return 0


def cmd_mcp_approve(ctx: Context, args: argparse.Namespace) -> int:
    _server(ctx, args.server)
    waiting = [t for t in ctx.store.read(queries.mcp_tools, args.server) if t.listed and not t.offered
               and (not args.tool or t.name in args.tool)]
    for t in waiting:
        for text in change_lines(t):
            line(text)
    approved = ctx.store.write(r.approve_mcp, OWNER, args.server, args.tool or ())
    if not approved:
        line(f"nothing to approve: every tool {args.server} lists is offered as approved")
        return 0
    line(f"approved {len(approved)} tool(s) of {args.server}: "
         + ", ".join(safe_text(t.name) for t in approved)
         + " (a running instance offers them from its next listing)")
    return 0


def cmd_mcp_serve(ctx: Context, args: argparse.Namespace) -> int:
    # Imported here: the MCP SDK is heavy, and building the CLI's parser must stay quick.
    import anyio

    from agents.mcp.serve import serve_stdio

    ctx.ensure_home()
    ctx.close()  # the session holds its own store, on its own thread
    anyio.run(serve_stdio, ctx.db_path, ctx.config.enabled_agents())
    return 0


def main() -> None:
    """The command as a process of its own (tests, or a client configured without the
    CLI): one line on stderr and exit 1 or 2 for a problem agentdeck can explain."""
    setup_logging()
    ctx = Context(None)
    try:
        code = cmd_mcp_serve(ctx, argparse.Namespace())
    except AgentdeckError as err:
        sys.stderr.write(f"agentdeck: {safe_text(str(err))}\n")
        code = err.exit_code
    sys.exit(code)


if __name__ == "__main__":
    main()
