"""Logging for the CLI and the instance: one terminal-safe line per record."""

from __future__ import annotations

import logging

from agents.safe_text import safe_text


class SafeFormatter(logging.Formatter):
    """Log messages quote errors, paths and event data: show their control characters
    as escapes, and keep each message on one line. A traceback keeps its lines (one line
    of `\\x0a` is unreadable), each indented, so none can pass for a record of its own."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            first = safe_text(super().format(record))
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        extra = self.formatException(saved[0]).splitlines() if saved[0] else []
        extra += self.formatStack(saved[2]).splitlines() if saved[2] else []
        return "\n".join([first, *("  " + safe_text(line) for line in extra)])


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
