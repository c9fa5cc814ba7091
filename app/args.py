"""Argument types, the parser class every `agentdeck` command registers with, and the
helpers the command modules (app/commands/) share to register theirs.

Standard library only: `app.cli` imports this before its error boundary is in place.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from app.context import Context

MAX_ID = 2**63 - 1  # SQLite's largest integer
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: no `1_0`, no other scripts' digits, no sign


def positive_int(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a whole number (digits 0-9 only): {text!r}")
    value = int(text)
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"out of range: {text}")
    return value


def at_least_one(text: str) -> int:
    value = positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def priority(text: str) -> int:
    from agents.store.reducers.tasks import MAX_PRIORITY

    value = positive_int(text)
    if value > MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"priority is 0..{MAX_PRIORITY}, got {value}")
    return value


def seconds(text: str) -> float:
    """A plain decimal number of seconds (no `inf`, `nan`, exponents or `_`)."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return float(text)


def clean_argument(text: str) -> str:
    """Arguments that were not valid UTF-8 arrive as lone surrogates; keep what we can."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def home_dir(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a directory")
    return text


class Parser(argparse.ArgumentParser):
    """argparse, whose error messages echo what was typed: made terminal-safe."""

    def error(self, message: str) -> NoReturn:
        from agents.safe_text import safe_text

        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {safe_text(message)}\n")


def add_command(
    sub: argparse._SubParsersAction, name: str,
    handler: Callable[[Context, argparse.Namespace], int] | None, help_text: str,
) -> argparse.ArgumentParser:
    """A top-level command; its line in `agentdeck --help` is also its description.
    A command whose ACTION picks the handler passes None here."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(handler=handler)
    return p


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
