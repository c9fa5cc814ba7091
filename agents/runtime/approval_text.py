"""An approval as the lines a person reads before deciding: the same in the CLI and the TUI."""

from __future__ import annotations

import json
import math
import time

from agents.protocol import Approval


def approval_lines(a: Approval, now: float | None = None) -> list[str]:
    """Everything a person needs to decide, each line terminal-safe when printed."""
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
    return lines
