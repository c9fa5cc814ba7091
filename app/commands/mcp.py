"""`agentdeck mcp serve`: agentdeck as an MCP server on stdin/stdout, for an editor or a
coding agent to hand the crew work and read what it did (agents/mcp/serve.py). It runs
until stdin closes, SIGTERM or Ctrl-C; stdout carries the protocol only.

Registered by `agentdeck mcp` (app/commands/mcp.py); `main()` runs it without the CLI,
the home from $AGENTDECK_HOME.
"""

from __future__ import annotations

import argparse
import sys

from agents.errors import AgentdeckError
from agents.safe_text import safe_text
from app.context import Context
from app.logs import setup_logging


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
