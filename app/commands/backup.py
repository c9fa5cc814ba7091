"""`agentdeck backup PATH`: a consistent copy of the database, safe while an instance runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agents.errors import AgentdeckError, StoreOpenError
from agents.store.online_backup import backup_database
from app.args import add_command
from app.context import Context
from app.render import line


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "backup", cmd_backup, "a consistent copy of the database, safe while running")
    p.add_argument("path", metavar="PATH", help="file to write, or a directory to write it in")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def backup_path(target: str) -> Path:
    """PATH itself, or a timestamped file inside PATH when it is a directory."""
    path = Path(target).expanduser().absolute()
    if path.is_dir():
        return path / time.strftime("agentdeck-%Y%m%d-%H%M%S.db")
    return path


def cmd_backup(ctx: Context, args: argparse.Namespace) -> int:
    if not ctx.db_path.exists():
        raise StoreOpenError(f"database {ctx.db_path}: does not exist; nothing to back up")
    dest = backup_path(args.path)
    if dest.resolve() == ctx.db_path.resolve():
        raise AgentdeckError(f"{dest} is the database itself; give another path", exit_code=2)
    if not dest.parent.is_dir():
        raise AgentdeckError(f"{dest.parent}: no such directory", exit_code=2)
    if dest.exists() and not args.force:
        raise AgentdeckError(f"{dest} already exists; use --force to overwrite it")
    result = backup_database(ctx.db_path, dest)
    if result.integrity != ["ok"]:
        raise AgentdeckError(f"the copy at {dest} failed its integrity check: "
                             f"{'; '.join(result.integrity)}")
    counts = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    line(f"backed up to {dest} ({result.bytes / 1e6:.1f} MB; integrity ok; {counts})")
    return 0
