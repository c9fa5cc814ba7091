"""Output: JSON for machines (--json), short aligned text for people.

Everything printed here may have come from a model, a tool or the database, so every
path goes through agents.safe_text: `line` and `table` show control and bidi characters
as escapes, `print_json` writes exact JSON with them as `\\u` escapes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.cells import cell_len

from agents.protocol import Event, to_builtins
from agents.runtime.event_text import ago as ago
from agents.runtime.event_text import when as event_time
from agents.safe_text import safe_json, safe_text
from agents.safe_text import shorten as safe_shorten


def print_json(obj: Any) -> None:
    sys.stdout.write(safe_json(obj) + "\n")


def event_json(event: Event) -> str:
    """One event as one JSON line: `agentdeck log --json` and `agentdeck run --json`."""
    return safe_json(
        {
            "id": event.id, "ts": event.ts, "kind": event.kind, "actor": event.actor,
            "subject": event.subject, "recipient": event.recipient,
            "payload": to_builtins(event.payload),
        }
    )


def line(text: object = "") -> None:
    """One line of text on stdout, terminal-safe (a newline inside is shown as `\\x0a`)."""
    sys.stdout.write(safe_text(text) + "\n")


def when(ts: float | None) -> str:
    return "-" if ts is None else event_time(ts)


def _pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal cells (a CJK character or an emoji takes two)."""
    return text + " " * (width - cell_len(text))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [[("" if c is None else safe_text(c)) for c in r] for r in rows]
    widths = [cell_len(h) for h in headers]
    for r in text_rows:
        widths = [max(w, cell_len(c)) for w, c in zip(widths, r, strict=True)]
    header = "  ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True))
    sys.stdout.write(header.rstrip() + "\n")
    for r in text_rows:
        sys.stdout.write("  ".join(_pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def shorten(text: str, width: int = 60) -> str:
    """Terminal-safe, whitespace collapsed, at most `width` characters."""
    return safe_shorten(safe_text(text), width)


def listing(items: Sequence[Any], as_json: bool, empty: str, headers: Sequence[str],
            row: Callable[[Any], Sequence[object]]) -> None:
    """A list command's output: exact JSON, a line saying there is nothing, or a table."""
    if as_json:
        print_json(items)
    elif not items:
        line(empty)
    else:
        table(headers, [row(item) for item in items])
