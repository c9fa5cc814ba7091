"""Checkpoints: what each writing tool call did to the workspace, and undos and redos of a
task's changes. A call's checkpoint is written once, after the call, with both trees; an
undo or redo is written `running` with its whole plan before any file is touched, and
`done` after the last one, so a crash in between leaves a row a second run completes."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agents.errors import InvalidArgument, InvalidTransition, PermissionDenied
from agents.protocol import (
    ChangedFile,
    Checkpoint,
    CheckpointKind,
    FilesChanged,
    FilesRestored,
    NotCheckpointed,
    PlannedFile,
)
from agents.store import rows
from agents.store.tx import Tx

MAX_FILES = 100_000  # paths one checkpoint may list; a tree rewritten wholesale is cut here
NOTE_CHARS = 500


def _json(items: Sequence[msgspec.Struct]) -> str:
    return msgspec.json.encode(list(items[:MAX_FILES])).decode()


def record_checkpoint(
    tx: Tx, actor: str, *, workspace: str, before_tree: str | None, after_tree: str | None,
    files: Sequence[ChangedFile], skipped: Sequence[NotCheckpointed] = (), task_id: int | None = None,
    tool_call_id: int | None = None, failed: str = "",
) -> Checkpoint:
    """A call's effect on the files; `failed` says why it could not be recorded at all."""
    tx.check_actor(actor)
    if actor not in tx.agents:
        raise PermissionDenied(f"{actor}: only agents' calls are checkpointed")
    if tool_call_id is not None:
        call = rows.tool_call(tx.row("tool_calls", tool_call_id))
        if call.agent != actor:
            raise PermissionDenied(f"{actor} does not own tool call {tool_call_id}")
        task_id = call.task_id
    cur = tx.execute(
        "INSERT INTO checkpoints (kind, actor, task_id, tool_call_id, workspace, before_tree, after_tree, "
        "status, files, skipped, note, created_at, finished_at) "
        "VALUES ('call', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (actor, task_id, tool_call_id, workspace, before_tree, after_tree, "failed" if failed else "done",
         _json(files), _json(skipped), failed[:NOTE_CHARS], tx.now, tx.now),
    )
    assert cur.lastrowid is not None
    checkpoint = rows.checkpoint(tx.row("checkpoints", cur.lastrowid))
    subject = f"task:{task_id}" if task_id is not None else f"tool_call:{tool_call_id}"
    tx.emit(actor, FilesChanged(checkpoint=checkpoint), subject=subject)
    return checkpoint


def start_restore(
    tx: Tx, actor: str, kind: CheckpointKind, task_id: int, workspace: str, plan: Sequence[PlannedFile],
    files: Sequence[ChangedFile] = (), note: str = "",
) -> Checkpoint:
    """An undo or redo about to touch files: the plan, durable before the first one."""
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not undo changes; the person at the keyboard does")
    if kind not in ("undo", "redo"):
        raise InvalidArgument(f"a restore is an undo or a redo, not {kind!r}")
    rows.task(tx.row("tasks", task_id))  # NotFound for a task that does not exist
    running = tx.one("SELECT id FROM checkpoints WHERE task_id = ? AND kind IN ('undo', 'redo') "
                     "AND status = 'running'", (task_id,))
    if running is not None:
        raise InvalidTransition(f"task {task_id} has an unfinished restore (checkpoint {running[0]}): "
                                "run it again to complete it")
    cur = tx.execute(
        "INSERT INTO checkpoints (kind, actor, task_id, workspace, status, files, plan, note, created_at) "
        "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
        (kind, actor, task_id, workspace, _json(files), _json(plan), note[:NOTE_CHARS], tx.now),
    )
    assert cur.lastrowid is not None
    checkpoint = rows.checkpoint(tx.row("checkpoints", cur.lastrowid))
    tx.emit(actor, FilesRestored(checkpoint=checkpoint), subject=f"task:{task_id}")
    return checkpoint


def finish_restore(tx: Tx, actor: str, checkpoint_id: int, *, failed: str = "") -> Checkpoint:
    if not tx.privileged(actor):
        raise PermissionDenied(f"{actor} may not undo changes; the person at the keyboard does")
    current = rows.checkpoint(tx.row("checkpoints", checkpoint_id))
    if current.kind == "call" or current.status != "running":
        raise InvalidTransition(f"checkpoint {checkpoint_id} is not a running undo or redo")
    tx.execute("UPDATE checkpoints SET status = ?, note = CASE WHEN ? = '' THEN note ELSE ? END, "
               "finished_at = ? WHERE id = ?",
               ("failed" if failed else "done", failed, failed[:NOTE_CHARS], tx.now, checkpoint_id))
    checkpoint = rows.checkpoint(tx.row("checkpoints", checkpoint_id))
    tx.emit(actor, FilesRestored(checkpoint=checkpoint), subject=f"task:{current.task_id}")
    return checkpoint
