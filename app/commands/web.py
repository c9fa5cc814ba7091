"""`agentdeck web`: the attached cockpit (`agentdeck attach`) in a browser on this machine.

textual-serve runs one `attach` per browser session, on this home, and relays it to the
page; the server listens on 127.0.0.1 only and serves nothing without the token it prints.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys

from app.args import add_command
from app.context import Context

DEFAULT_PORT = 8123


def port_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port (0..65535): {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "web", cmd_web, "serve the attached cockpit to a browser on this machine "
                    "(127.0.0.1, behind a token it prints)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free one)")


def attach_command(ctx: Context) -> str:
    """What each browser session runs: this Python's `agentdeck attach` on this home."""
    return "exec " + shlex.join([sys.executable, "-m", "app.cli", "--home", str(ctx.home), "attach"])


def cmd_web(ctx: Context, args: argparse.Namespace) -> int:
    import asyncio

    from app.tui import check_ui_config
    from app.web_auth import GuardedServer  # aiohttp and textual-serve only for this command

    check_ui_config(ctx.config)  # a config the cockpit would refuse fails here, not in the page
    ctx.ensure_home()
    os.environ["AGENTDECK_HOME"] = str(ctx.home)  # the sessions inherit it, as `attach` would
    server = GuardedServer(attach_command(ctx), secrets.token_urlsafe(24), title="agentdeck")

    def ready(url: str) -> None:
        print(f"the cockpit, for this machine only: {url}", flush=True)

    asyncio.run(server.run(args.port, ready))
    return 0
