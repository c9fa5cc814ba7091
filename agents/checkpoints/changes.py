"""What a task (with its subtasks) changed on disk: the net change of every file its
writing calls touched, from the state before the first call that touched it to the state
after the last, per workspace (a task in a git worktree changes that worktree).

Read from the checkpoints the gate recorded; nothing here writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from agents.checkpoints.shadow import ShadowRepo
from agents.errors import NotFound
from agents.protocol import ChangedFile, Checkpoint, FileState, NotCheckpointed, Task
from agents.store import queries

Reader = Callable[..., Awaitable[Any]]  # AsyncStore.read: (query, *args) -> its result
ChangeState = Literal["unchanged", "changed", "undone", "restoring"]


@dataclass
class WorkspaceChanges:
    """One workspace's share of a task's changes."""

    workspace: str
    files: list[ChangedFile]
    before: dict[str, FileState | None]  # each changed path before the task (None: absent)
    after: dict[str, FileState | None]  # and after its last call that touched it
    before_tree: str  # trees of exactly those paths, for the net diff
    after_tree: str
    last_checkpoint: int  # the newest call checkpoint: changes after it are someone else's
    first_full_tree: str  # the whole workspace before the task's first call (for directories)


@dataclass
class TaskChanges:
    task: Task
    task_ids: list[int]
    parts: list[WorkspaceChanges] = field(default_factory=list)
    not_checkpointed: list[NotCheckpointed] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # calls whose checkpoint failed, why
    restores: list[Checkpoint] = field(default_factory=list)  # undos and redos, oldest first
    calls: int = 0  # call checkpoints that changed something

    @property
    def files(self) -> list[ChangedFile]:
        return [f for part in self.parts for f in part.files]

    @property
    def state(self) -> ChangeState:
        if any(r.status == "running" for r in self.restores):
            return "restoring"
        if not self.files:
            return "unchanged"
        done = [r for r in self.restores if r.status == "done"]
        return "undone" if done and done[-1].kind == "undo" else "changed"


class ChangesJson(msgspec.Struct, kw_only=True):
    """`agentdeck changes TASK --json`."""

    task_id: int
    title: str
    owner: str | None
    status: str
    tasks: list[int]
    state: str
    workspaces: list[str]
    files: list[ChangedFile]
    not_checkpointed: list[NotCheckpointed]
    unrecorded: list[str]
    restores: list[dict[str, Any]]
    added: int
    removed: int
    diff: str | None = None


async def task_changes(read: Reader, home: Path, task_id: int) -> TaskChanges:
    task = await read(queries.task, task_id)
    if task is None:
        raise NotFound(f"task {task_id} does not exist")
    ids = await read(queries.subtree, task_id, 10_000)
    found: list[Checkpoint] = await read(queries.checkpoints, ids)
    changes = TaskChanges(task=task, task_ids=sorted(ids))
    changes.restores = [c for c in found if c.kind != "call" and c.task_id == task_id]
    calls = [c for c in found if c.kind == "call"]
    for c in calls:
        if c.status == "failed":
            changes.unrecorded.append(f"call {c.tool_call_id}: {c.note}")
        changes.not_checkpointed += c.skipped
    recorded = [c for c in calls if c.status == "done" and c.before_tree and c.after_tree]
    changes.calls = sum(1 for c in recorded if c.files)
    for workspace in dict.fromkeys(c.workspace for c in recorded):
        mine = [c for c in recorded if c.workspace == workspace]
        part = await _net(ShadowRepo(home, Path(workspace)), mine)
        if part is not None:
            changes.parts.append(part)
    return changes


async def _net(repo: ShadowRepo, calls: list[Checkpoint]) -> WorkspaceChanges | None:
    """The net change of these calls (oldest first) in one workspace."""
    first_seen: dict[str, Checkpoint] = {}
    last_seen: dict[str, Checkpoint] = {}
    for c in calls:
        for f in c.files:
            first_seen.setdefault(f.path, c)
            last_seen[f.path] = c
    if not first_seen:
        return None
    before = await _states(repo, first_seen, "before")
    after = await _states(repo, last_seen, "after")
    before_tree = await repo.tree_of({p: s for p, s in before.items() if s is not None})
    after_tree = await repo.tree_of({p: s for p, s in after.items() if s is not None})
    files = await repo.diff(before_tree, after_tree)
    first_tree = calls[0].before_tree
    assert first_tree is not None
    return WorkspaceChanges(workspace=str(repo.workspace), files=files, before=before, after=after,
                            before_tree=before_tree, after_tree=after_tree,
                            last_checkpoint=calls[-1].id, first_full_tree=first_tree)


async def _states(repo: ShadowRepo, seen: dict[str, Checkpoint], side: str) -> dict[str, FileState | None]:
    """Each path's state in the before (or after) tree of the checkpoint named for it."""
    by_tree: dict[str, list[str]] = {}
    for path, c in seen.items():
        tree = c.before_tree if side == "before" else c.after_tree
        assert tree is not None
        by_tree.setdefault(tree, []).append(path)
    states: dict[str, FileState | None] = dict.fromkeys(seen)
    for tree, paths in by_tree.items():
        states.update(await repo.entries(tree, paths))
    return states


async def task_patch(home: Path, changes: TaskChanges) -> str:
    """The net unified diff of a task's changes, every workspace's in turn."""
    parts = [await ShadowRepo(home, Path(p.workspace)).patch(p.before_tree, p.after_tree)
             for p in changes.parts]
    return "".join(parts)


def as_json(changes: TaskChanges, diff: str | None = None) -> ChangesJson:
    files = changes.files
    return ChangesJson(
        task_id=changes.task.id, title=changes.task.title, owner=changes.task.owner,
        status=changes.task.status, tasks=changes.task_ids, state=changes.state,
        workspaces=[p.workspace for p in changes.parts], files=files,
        not_checkpointed=changes.not_checkpointed, unrecorded=changes.unrecorded,
        restores=[{"id": r.id, "kind": r.kind, "status": r.status, "at": r.created_at, "note": r.note}
                  for r in changes.restores],
        added=sum(f.added or 0 for f in files), removed=sum(f.removed or 0 for f in files), diff=diff,
    )
