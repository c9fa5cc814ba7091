"""What a unified diff changes, line by line, for a reader that must name the line.

Measured: reading change.diff raw, Qwen-1.5B pointed three reviews out of four at a
context line or a removed one, and named no line number the checker could find; the
numbers in the new file are not written anywhere in a diff. `changed_lines` lists each
added and removed line with its number (unidiff parses; no hand-written hunk counting).
"""

from __future__ import annotations

import msgspec
from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from agents.safe_text import shorten

MAX_LISTED = 40  # changed lines listed after a diff; a longer diff says how many more
LINE_CHARS = 160


class ChangedLine(msgspec.Struct, frozen=True):
    path: str
    line: int  # in the new file for an added line, in the old file for a removed one
    added: bool
    text: str


def changed_lines(diff: str) -> list[ChangedLine]:
    """Every added and removed line of a unified diff; [] when `diff` is not one."""
    try:
        patch = PatchSet(diff)
    except (UnidiffParseError, ValueError):
        return []
    found: list[ChangedLine] = []
    for changed in patch:
        for hunk in changed:
            for line in hunk:
                text = line.value.rstrip("\n")
                if line.is_added and line.target_line_no is not None:
                    found.append(ChangedLine(changed.path, line.target_line_no, True, text))
                elif line.is_removed and line.source_line_no is not None:
                    found.append(ChangedLine(changed.path, line.source_line_no, False, text))
    return found


def changes_summary(diff: str) -> str:
    """The lines after a diff's text that say where each change is: `path:N + code` for
    an added line (its number in the new file), `path:N - code` for a removed one (in
    the old file). '' when the text is not a diff or changes nothing."""
    found = changed_lines(diff)
    if not found:
        return ""
    rows = [f"{c.path}:{c.line} {'+' if c.added else '-'} {shorten(c.text.strip(), LINE_CHARS)}"
            for c in found[:MAX_LISTED]]
    more = f"\n… and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
    return ("[changed lines: path:line in the new file (+ added) or the old file (- removed)]\n"
            + "\n".join(rows) + more)
