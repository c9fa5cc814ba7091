"""A task's changes for a live display, read again only when they can have changed.

Working out a task's changes runs git (`task_changes`); a display refreshed every second
must not. One cheap query reads each watched task's mark — its row's last update and
its subtree's newest checkpoint and unfinished restores — and the changes are worked
out again only for a task whose mark moved."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.checkpoints.changes import Reader, TaskChanges, task_changes
from agents.errors import AgentdeckError

SUBTREE_MOST = 10_000  # as task_changes reads it


@dataclass(frozen=True)
class ChangeMark:
    updated_at: float  # the task's row (its status and title are in the summary)
    latest_checkpoint: int  # the newest checkpoint of the task and its subtasks, 0: none
    unfinished: int  # restores still running (one finishing adds no row)


@dataclass(frozen=True)
class Watched:
    changes: TaskChanges | None  # None: they could not be read (`error` says why)
    error: str = ""


def change_marks(conn: sqlite3.Connection, task_ids: Sequence[int]) -> dict[int, ChangeMark]:
    """Each task's mark (a task that does not exist has none). Indexed reads only."""
    found: dict[int, ChangeMark] = {}
    for task_id in dict.fromkeys(task_ids):
        row = conn.execute(
            "WITH RECURSIVE down(id) AS (SELECT id FROM tasks WHERE id = ? "
            "UNION SELECT t.id FROM tasks t JOIN down ON t.parent_id = down.id) "
            "SELECT (SELECT updated_at FROM tasks WHERE id = ?), COALESCE(MAX(c.id), 0), "
            "COUNT(CASE WHEN c.status = 'running' AND c.kind != 'call' THEN 1 END) "
            "FROM checkpoints c WHERE c.task_id IN (SELECT id FROM down LIMIT ?)",
            (task_id, task_id, SUBTREE_MOST)).fetchone()
        if row is not None and row[0] is not None:
            found[task_id] = ChangeMark(float(row[0]), int(row[1]), int(row[2]))
    return found


class ChangeWatch:
    """The latest changes of the tasks a display shows, kept for the last `keep` tasks."""

    def __init__(self, home: Path, keep: int = 64) -> None:
        self.home = home
        self.keep = keep
        self.worked_out = 0  # how many times task_changes ran (tests count them)
        self._seen: OrderedDict[int, tuple[ChangeMark, Watched]] = OrderedDict()

    async def read(self, read: Reader, task_ids: Sequence[int]) -> dict[int, Watched]:
        """Each existing task's changes, worked out again only where its mark moved."""
        wanted = list(dict.fromkeys(task_ids))
        if not wanted:
            return {}
        marks: dict[int, ChangeMark] = await read(change_marks, wanted)
        found: dict[int, Watched] = {}
        for task_id in wanted:
            mark = marks.get(task_id)
            if mark is None:
                self._seen.pop(task_id, None)
                continue
            seen = self._seen.get(task_id)
            if seen is not None and seen[0] == mark:
                self._seen.move_to_end(task_id)
                found[task_id] = seen[1]
                continue
            found[task_id] = await self._work_out(read, task_id)
            self._seen[task_id] = (mark, found[task_id])
            self._seen.move_to_end(task_id)
            while len(self._seen) > self.keep:
                self._seen.popitem(last=False)
        return found

    async def _work_out(self, read: Reader, task_id: int) -> Watched:
        self.worked_out += 1
        try:
            return Watched(await task_changes(read, self.home, task_id))
        except (AgentdeckError, OSError) as err:  # git missing or failing: said, and not retried until news
            return Watched(None, f"changes of task {task_id} could not be read: {err}")
