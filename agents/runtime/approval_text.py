"""An approval as the lines a person reads before deciding: the same in the CLI and the TUI."""

from __future__ import annotations

import json
import math
import time

from agents.checkpoints.preview import MAX_PREVIEW_LINES
from agents.protocol import Approval
from agents.safe_text import safe_text

PREVIEW_HEADING = "  would change:"


def preview_lines(a: Approval) -> list[str]:
    """The diff (or note) of what the call would change, one terminal-safe line each
    (the stored text is raw: it holds the file's own bytes), at most MAX_PREVIEW_LINES
    and a note of the rest even for a row written without the cap."""
    if not a.preview:
        return []
    lines = a.preview.split("\n")  # only \n: the other separators are shown, not obeyed
    if len(lines) > MAX_PREVIEW_LINES + 1:
        lines = [*lines[:MAX_PREVIEW_LINES], f"… {len(lines) - MAX_PREVIEW_LINES} more lines"]
    return [safe_text(line) for line in lines]


def approval_lines(a: Approval, now: float | None = None, *, with_preview: bool = True) -> list[str]:
    """Everything a person needs to decide, each line terminal-safe when printed; the
    preview of a write last, indented under its heading (`with_preview=False` leaves it
    to a front end that shows preview_lines its own way)."""
    now = time.time() if now is None else now
    if a.status != "pending":
        state = f"{a.status}" + (f" by {a.decided_by}" if a.decided_by else "")
    elif math.isfinite(a.expires_at):
        state = f"expires in {int(a.expires_at - now)}s"
    else:  # a row from before the reducers refused inf
        state = "never expires"
    lines = [
        f"approval {a.id}: {a.agent} wants {a.tool} ({state})",
        f"  arguments:   {json.dumps(a.arguments, ensure_ascii=False, sort_keys=True)}",
        f"  resolves to: {a.resolved}",
    ]
    if a.ask_reason:
        lines.append(f"  why it asks: {a.ask_reason}")
    if a.reason:  # only the model's own words; nothing stands in for a reason it did not give
        lines.append(f"  agent says:  {a.reason!r}  (the model's words)")
    lines.append(f"  always:      saves `allow {a.agent} {a.tool} {a.always_rule!r}`" if a.always_rule
                 else "  always:      not offered (no rule can allow this call)")
    if with_preview and (preview := preview_lines(a)):
        lines += [PREVIEW_HEADING, *(f"    {line}" for line in preview)]
    return lines
