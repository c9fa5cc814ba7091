"""Logging for the CLI and the instance: one terminal-safe line per record."""

from __future__ import annotations

import logging

from agents.safe_text import safe_text


class SafeFormatter(logging.Formatter):
    """Log messages quote errors, paths and event data: show their control characters
    as escapes, and keep each record on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return safe_text(super().format(record))


def setup_logging(level: int = logging.WARNING) -> None:
    """Like logging.basicConfig: does nothing when logging is already set up (a test's
    capture handler, say)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("agentdeck: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
