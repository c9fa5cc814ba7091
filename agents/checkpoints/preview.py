"""What a write would change, shown with its approval: the unified diff of the file now
against the file the call would leave, computed by the tool's own functions
(agents.tools.files.planned_edit / planned_append), so what the gate shows is what runs.

The text is stored raw with the approval (capped); every front end shows it through
safe_text. Never raises: a path, argument or file that cannot be previewed gives a
one-line note or None.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from agents.policy.paths import resolve_path
from agents.tools import TOOLS, fs
from agents.tools.base import ToolError
from agents.tools.files import AppendArgs, EditArgs, WriteArgs, planned_append, planned_edit

PREVIEW_TOOLS = frozenset({"write_file", "edit_file", "append_file"})
MAX_PREVIEW_LINES = 80
MAX_PREVIEW_CHARS = 4_000
MAX_DIFF_BYTES = 1 << 20  # a side larger than this is described, not diffed (difflib is quadratic at worst)
MAX_DIFF_LINES = 6_000  # changed lines on both sides together: difflib took 52 s on 25k alternating lines
CONTEXT = 3
_HUNK = re.compile(r"^@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@")
# A path nothing lives under: the preview is read-only and the policy has already refused
# agentdeck's home before anything asks, so without `home` nothing more is hidden.
_NO_HOME = Path("/nonexistent/agentdeck-preview")


def write_preview(tool: str, arguments: Any, workspace: Path, home: Path | None = None) -> str | None:
    """The diff (or a one-line note) of what `tool` called with `arguments` would do to
    the workspace; None for a tool without a preview or arguments the tool would refuse
    before touching a file (its own answer says why)."""
    if tool not in PREVIEW_TOOLS or not isinstance(arguments, dict):
        return None
    try:
        return _preview(tool, arguments, workspace, home or _NO_HOME)
    except Exception as err:  # a preview is a courtesy: it never stops the question being asked
        return f"no preview: {type(err).__name__}: {err}"


def _preview(tool: str, arguments: dict[str, Any], workspace: Path, home: Path) -> str | None:
    try:
        args = TOOLS[tool].parse(arguments)
    except ToolError:
        return None  # refused as bad arguments before any file is read: nothing would change
    where = resolve_path(getattr(args, "path", ""), workspace, home)
    if where.problem or where.relative is None:
        return None  # the policy denies it; the tool would refuse it
    relative = where.relative
    try:
        if isinstance(args, WriteArgs):
            return _write_preview(workspace, relative, args.content)
        if isinstance(args, EditArgs):
            before, after = planned_edit(workspace, relative, args.old, args.new)
        elif isinstance(args, AppendArgs):
            before, after = planned_append(workspace, relative, args.text)
        else:
            return None
    except ToolError as err:  # the tool's own answer, in the conditional
        return f"{err}".replace("nothing changed", "nothing would change")
    except FileNotFoundError:
        return f"{relative}: no such file; nothing would change"
    except OSError as err:
        return f"{relative}: cannot be read ({err.strerror or err}); no preview"
    return unified(relative, before, after, new=False)


def _write_preview(workspace: Path, relative: str, content: str) -> str:
    new_bytes = len(content.encode("utf-8"))
    try:
        data, size = fs.read_bytes(workspace, relative, MAX_DIFF_BYTES + 1)
    except FileNotFoundError:
        if new_bytes > MAX_DIFF_BYTES:
            return f"{relative}: a new file of {new_bytes} bytes (too large to show)"
        return unified(relative, "", content, new=True)
    except OSError as err:
        return f"{relative}: cannot be read ({err.strerror or err}); no preview"
    if b"\x00" in data[:8192]:
        return f"{relative}: a binary file of {size} bytes, replaced by {new_bytes} bytes of text"
    if size > MAX_DIFF_BYTES or new_bytes > MAX_DIFF_BYTES:
        return f"{relative}: {size} bytes replaced by {new_bytes} bytes (too large to show a diff)"
    return unified(relative, data.decode("utf-8", "replace"), content, new=False)


def _lines(text: str) -> list[str]:
    """Lines split at "\\n" only, ends kept: str.splitlines would also split at \\r,
    \\x0c or U+2028 and show a file with lines it does not have."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def unified(relative: str, before: str, after: str, *, new: bool) -> str:
    """The capped unified diff of `before` -> `after`, labelled a/ b/ with the path."""
    if before == after:
        return f"{relative}: no change"
    a, b = _lines(before), _lines(after)
    # Only the changed middle goes to difflib, with its context: a one-line edit of a
    # large file costs what the edit costs. The hunk headers are moved back into place.
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    removed, added = len(a) - head - tail, len(b) - head - tail
    if removed + added > MAX_DIFF_LINES:
        return (f"{relative}: {removed} lines from line {head + 1} replaced by {added} lines "
                "(too many changes to show a diff)")
    skip = max(0, head - CONTEXT)
    keep_tail = max(0, tail - CONTEXT)
    a_mid, b_mid = a[skip:len(a) - keep_tail], b[skip:len(b) - keep_tail]
    out: list[str] = []
    for line in difflib.unified_diff(a_mid, b_mid, "/dev/null" if new else f"a/{relative}",
                                     f"b/{relative}", n=CONTEXT):
        if skip and (m := _HUNK.match(line)):
            line = f"@@ -{int(m[1]) + skip}{m[2]} +{int(m[3]) + skip}{m[4]} @@" + line[m.end():]
        if line.endswith("\n"):
            out.append(line[:-1])
        else:
            out += [line, "\\ No newline at end of file"]
    return capped(out)


def capped(lines: list[str]) -> str:
    """At most MAX_PREVIEW_LINES lines and about MAX_PREVIEW_CHARS characters, and a note
    of how many lines were left out."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if len(kept) >= MAX_PREVIEW_LINES or size + len(line) + 1 > MAX_PREVIEW_CHARS:
            break
        kept.append(line)
        size += len(line) + 1
    if len(kept) < len(lines):
        if not kept:  # one enormous first line: its start, not nothing
            kept.append(lines[0][:MAX_PREVIEW_CHARS - 40] + "…")
        left = len(lines) - len(kept)
        if left:
            kept.append(f"… {left} more line{'' if left == 1 else 's'}")
    return "\n".join(kept)

