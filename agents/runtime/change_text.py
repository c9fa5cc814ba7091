"""A task's changes to the files as a person reads them: `agentdeck changes`, the
cockpit's task detail and an agent's pane (one line, capped to its width), and what an
undo or redo did. Every line is terminal-safe."""

from __future__ import annotations

from agents.checkpoints.changes import TaskChanges
from agents.checkpoints.undo import Outcome, Plan
from agents.protocol import ChangedFile
from agents.runtime.event_text import ago
from agents.safe_text import safe_text, shorten


def _counts(c: TaskChanges) -> tuple[int, int]:
    files = c.files
    return sum(f.added or 0 for f in files), sum(f.removed or 0 for f in files)


def summary_line(c: TaskChanges) -> str:
    added, removed = _counts(c)
    state = {"undone": " [undone]", "restoring": " [undo unfinished: run it again]"}.get(c.state, "")
    title = shorten(safe_text(c.task.title), 50)
    return safe_text(f"#{c.task.id} {c.task.owner or '-'} {ago(c.task.updated_at)}: {len(c.files)} file(s) "
                     f"+{added} -{removed}{state}  {title}")


def change_lines(c: TaskChanges) -> list[str]:
    """The task's changes as terminal-safe lines: a heading, one line per file, then what
    could not be recorded and the undo history."""
    out = [summary_line(c)]
    if len(c.task_ids) > 1:
        out.append(f"  (with subtasks {', '.join(str(t) for t in c.task_ids if t != c.task.id)})")
    multi = len(c.parts) > 1
    for part in c.parts:
        if multi:
            out.append(safe_text(f"  in {part.workspace}:"))
        out += [safe_text(f"  {file_line(f)}") for f in part.files]
    out += [safe_text(f"  not checkpointed: {n.path} ({n.reason})") for n in c.not_checkpointed]
    out += [safe_text(f"  not recorded: {u}") for u in c.unrecorded]
    for r in c.restores:
        out.append(safe_text(f"  {r.kind} {r.id} {r.status} {ago(r.created_at)}"
                             + (f": {r.note}" if r.note else "")))
    if c.state == "undone":
        out.append(f"  undone; `agentdeck redo {c.task.id}` puts the changes back")
    return out


def file_line(f: ChangedFile) -> str:
    counts = "binary" if f.added is None else f"+{f.added} -{f.removed}"
    mode = f" mode {f.old_mode}→{f.new_mode}" if f.status == "M" and f.old_mode != f.new_mode else ""
    return f"{f.status} {f.path}  {counts}{mode}"


def worth_showing(c: TaskChanges | None) -> bool:
    """Whether a task's changes say anything: files, something not recorded, an undo."""
    return c is not None and bool(c.files or c.not_checkpointed or c.unrecorded or c.restores)


PANE_WORDS = {"changed": "changed", "undone": "undone", "restoring": "undo unfinished"}


def pane_line(c: TaskChanges | None, width: int) -> str:
    """One line for an agent's pane, at most `width` characters: `changed: a.txt,
    src/x.py (+12 -3)`; the paths that do not fit are counted (`… 4 more`). Empty when
    the task changed nothing."""
    if c is None or not c.files or width < 1:
        return ""
    added, removed = _counts(c)
    head = f"{PANE_WORDS.get(c.state, c.state)}: "
    tail = f" (+{added} -{removed})"
    paths = [safe_text(f.path) for f in c.files]
    for shown in range(len(paths), 0, -1):
        more = len(paths) - shown
        text = head + ", ".join(paths[:shown]) + (f" … {more} more" if more else "") + tail
        if len(text) <= width:
            return text
    return shorten(f"{head}{len(paths)} file(s){tail}", width)


def outcome_text(plan: Plan, outcome: Outcome) -> str:
    """What an undo or redo did, for a notification (several lines at most)."""
    done = "completed the interrupted " if outcome.resumed else ""
    lines = [f"{done}{outcome.kind} of task {outcome.task_id}: {len(outcome.restored)} file(s) restored"
             + (f", {len(outcome.already)} already so" if outcome.already else "")]
    lines += [f"  {p}" for p in outcome.restored[:5]]
    if len(outcome.restored) > 5:
        lines.append(f"  … {len(outcome.restored) - 5} more")
    lines += [f"  overwritten (forced): {p}" for p in outcome.forced[:5]]
    lines += [f"  not restored, never checkpointed: {n.path} ({n.reason})" for n in plan.not_restorable[:5]]
    return "\n".join(safe_text(line) for line in lines)
