"""`agentdeck attach`: the TUI on the home of an instance running headless."""

from __future__ import annotations

import argparse

from app.args import add_command
from app.context import Context


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "attach", cmd_attach, "open the TUI on the home of an instance running headless")


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    from app.tui import cmd_attach as attach  # textual is imported only for the TUI

    return attach(ctx, args)
