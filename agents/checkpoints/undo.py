"""Undo (and redo) a task's changes to the workspace, in one step and crash-safe.

Plan: every file the task changed goes back to its state before the task (redo: forward
to its state after it), but only where the file is now as the task left it (redo: as the
undo left it). A file changed since by someone else is a conflict: listed, and nothing is
touched unless `force`. A file already in its target state is left alone, so running an
undo again after a crash completes it.

Apply: the plan is written to the database (`running`) before the first file is touched;
each file is then replaced atomically (written beside it, fsynced, renamed over it), so a
kill -9 at any moment leaves every file either as it was or as it should be; the row is
marked `done` after the last. A second run finds the `running` row and completes it."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents.checkpoints.changes import Reader, TaskChanges, WorkspaceChanges, task_changes
from agents.checkpoints.shadow import ShadowRepo, workspace_entry
from agents.errors import AgentdeckError, InvalidTransition
from agents.protocol import OWNER, Checkpoint, FileState, NotCheckpointed, PlannedFile
from agents.store import queries
from agents.store import reducers as r

RestoreKind = Literal["undo", "redo"]
LIVE_STATUSES = frozenset({"queued", "active", "waiting_approval", "blocked"})
TEMP_MARK = ".agentdeck-restore-"


class UndoRefused(AgentdeckError):
    """The undo would overwrite someone else's change, or cannot be done; nothing changed."""


@dataclass
class Conflict:
    path: str
    why: str


@dataclass
class PartPlan:
    workspace: str
    files: list[PlannedFile]
    first_full_tree: str


@dataclass
class Plan:
    kind: RestoreKind
    task_id: int
    parts: list[PartPlan] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    not_restorable: list[NotCheckpointed] = field(default_factory=list)
    resuming: Checkpoint | None = None  # a restore a crash cut short

    @property
    def files(self) -> list[PlannedFile]:
        return [f for p in self.parts for f in p.files]


@dataclass
class Outcome:
    kind: RestoreKind
    task_id: int
    restored: list[str]
    already: list[str]
    forced: list[str]
    checkpoints: list[int]
    resumed: bool


Writer = Callable[..., Awaitable[Any]]  # AsyncStore.write: (reducer, actor, *args) -> its result


async def plan_restore(read: Reader, home: Path, task_id: int, kind: RestoreKind) -> Plan:
    changes = await task_changes(read, home, task_id)
    running = [c for c in changes.restores if c.status == "running"]
    if running:  # a crash cut it short: finish that one, whatever was asked
        cut = running[-1]
        plan = Plan(kind="redo" if cut.kind == "redo" else "undo", task_id=task_id, resuming=cut)
        plan.parts = [PartPlan(cut.workspace, cut.plan or [], "")]
        plan.conflicts = _conflicts(plan.parts, {})
        return plan
    live = await _live(read, changes)
    if live:
        raise UndoRefused(f"task {live[0]} is still {live[1]}: cancel it or let it finish "
                          f"before its changes can be undone")
    if changes.state == "unchanged":
        raise UndoRefused(f"task {task_id} changed no checkpointed file; nothing to {kind}"
                          + _unrecorded_note(changes))
    if kind == "undo" and changes.state == "undone":
        raise UndoRefused(f"task {task_id}'s changes are already undone; "
                          f"`agentdeck redo {task_id}` puts them back")
    if kind == "redo" and changes.state != "undone":
        raise UndoRefused(f"task {task_id}'s changes are not undone; nothing to redo")
    plan = Plan(kind=kind, task_id=task_id, not_restorable=changes.not_checkpointed)
    gone = [p.workspace for p in changes.parts if not _is_dir(p.workspace)]
    if gone:  # a worktree merged or cleaned away: its changes live on in git, not here
        raise UndoRefused(f"task {task_id} worked in {gone[0]}, which is gone (merged or cleaned); "
                          "undo it in git (e.g. `git revert` of the merge)")
    who: dict[str, str] = {}
    for part in changes.parts:
        files = [PlannedFile(path=p, target=part.before[p], expected=part.after[p]) if kind == "undo"
                 else PlannedFile(path=p, target=part.after[p], expected=part.before[p])
                 for p in sorted(part.before) if part.before[p] != part.after[p]]
        plan.parts.append(PartPlan(part.workspace, files, part.first_full_tree))
        who |= await _changed_since(read, part, changes)
    plan.conflicts = _conflicts(plan.parts, who)
    return plan


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)  # one stat: not worth a thread


def _unrecorded_note(changes: TaskChanges) -> str:
    notes = [f.path + ": " + f.reason for f in changes.not_checkpointed] + changes.unrecorded
    return ("; not checkpointed: " + "; ".join(notes[:5])) if notes else ""


async def _live(read: Reader, changes: TaskChanges) -> tuple[int, str] | None:
    for tid in changes.task_ids:
        t = await read(queries.task, tid)
        if t is not None and t.status in LIVE_STATUSES:
            return tid, t.status
    return None


async def _changed_since(read: Reader, part: WorkspaceChanges, changes: TaskChanges) -> dict[str, str]:
    """path -> which later task's call changed it (for a conflict's explanation)."""
    later: list[Checkpoint] = await read(queries.checkpoints_after, part.last_checkpoint, list(part.before))
    mine = set(changes.task_ids)
    found: dict[str, str] = {}
    for c in later:
        if c.task_id in mine or c.workspace != part.workspace:
            continue
        for f in c.files:
            where = f" in task {c.task_id}" if c.task_id else ""
            found.setdefault(f.path, f"changed since by {c.actor}{where}")
    return found


def _conflicts(parts: list[PartPlan], who: dict[str, str]) -> list[Conflict]:
    found: list[Conflict] = []
    for part in parts:
        root = Path(part.workspace)
        for f in part.files:
            now = workspace_entry(root / f.path)
            if now == f.expected or now == f.target:
                continue
            found.append(Conflict(f.path, who.get(f.path) or _describe(now, f.expected)))
    return found


def _describe(now: FileState | None, expected: FileState | None) -> str:
    if now is None:
        return "removed since (not by an agent's recorded call)"
    if expected is None:
        return "created since (not by an agent's recorded call)"
    if now.mode == "040000":
        return "is a directory now"
    if now.blob == expected.blob:
        return "its mode changed since"
    return "changed since (not by an agent's recorded call)"


async def apply_restore(read: Reader, write: Writer, home: Path, plan: Plan, *,
                        force: bool = False) -> Outcome:
    """Carry out the plan. Refuses (nothing touched) on a conflict unless `force`."""
    if plan.conflicts and not force:
        listed = "; ".join(f"{c.path}: {c.why}" for c in plan.conflicts[:10])
        more = f" (and {len(plan.conflicts) - 10} more)" if len(plan.conflicts) > 10 else ""
        raise UndoRefused(f"{plan.kind} of task {plan.task_id} refused, nothing changed: "
                          f"{listed}{more}; --force overwrites them")
    outcome = Outcome(kind=plan.kind, task_id=plan.task_id, restored=[], already=[],
                      forced=[c.path for c in plan.conflicts], checkpoints=[],
                      resumed=plan.resuming is not None)
    for part in plan.parts:
        if plan.resuming is not None:
            row = plan.resuming
        else:
            row = await write(r.start_restore, OWNER, plan.kind, plan.task_id, part.workspace, part.files)
        outcome.checkpoints.append(row.id)
        try:
            await _apply_part(home, part, outcome, force)
        except OSError as err:
            why = f"{err.filename or ''}: {err.strerror or err}"
            await write(r.finish_restore, OWNER, row.id, failed=why)
            raise AgentdeckError(f"{plan.kind} of task {plan.task_id} stopped at {err.filename}: "
                                 f"{err.strerror or err}; run it again to complete it") from None
        await write(r.finish_restore, OWNER, row.id)
    return outcome


async def _apply_part(home: Path, part: PartPlan, outcome: Outcome, force: bool) -> None:
    root = Path(part.workspace)
    repo = ShadowRepo(home, root)
    removed_dirs: set[Path] = set()
    for f in part.files:
        target = root / f.path
        await asyncio.to_thread(_clean_temps, target)
        now = workspace_entry(target)
        if now == f.target:
            outcome.already.append(f.path)
            continue
        if now != f.expected and not force:
            raise UndoRefused(f"{f.path} changed while the {outcome.kind} ran; run it again")
        if f.target is None:
            await asyncio.to_thread(_remove, target)
            removed_dirs.add(target.parent)
        else:
            data = await repo.blob(f.target.blob)
            await asyncio.to_thread(_replace, target, f.target, data)
        outcome.restored.append(f.path)
    if part.first_full_tree:
        await _prune_new_dirs(repo, root, removed_dirs, part.first_full_tree)


def _clean_temps(target: Path) -> None:
    """A restore killed mid-write leaves its temporary file beside the target: remove it."""
    try:
        with os.scandir(target.parent) as entries:
            for e in entries:
                if e.name.startswith(f".{target.name}{TEMP_MARK}"):
                    os.unlink(e.path)
    except (FileNotFoundError, NotADirectoryError):
        pass


def _remove(target: Path) -> None:
    try:
        target.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(target.parent)


def _replace(target: Path, state: FileState, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}{TEMP_MARK}{secrets.token_hex(4)}"
    if state.mode == "120000":
        os.symlink(os.fsdecode(data), temp)
    else:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _mode_for(target, state))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, _mode_for(target, state))
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(21, "a directory is in the way", str(target))
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _mode_for(target: Path, state: FileState) -> int:
    """The file's own permission bits where it exists (a 0600 file stays 0600), with the
    executable bits git recorded; a new file gets the umask's default."""
    try:
        bits = stat.S_IMODE(os.lstat(target).st_mode) if not target.is_symlink() else None
    except FileNotFoundError:
        bits = None
    if bits is None:
        umask = os.umask(0)
        os.umask(umask)
        bits = 0o666 & ~umask
    read = bits & 0o444
    return (bits | (read >> 2)) if state.mode == "100755" else (bits & ~0o111)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _prune_new_dirs(repo: ShadowRepo, root: Path, dirs: set[Path], first_tree: str) -> None:
    """Directories the task created and the undo emptied are removed too (`mkdir -p a/b`
    then a file in it); a directory that held files before the task is kept."""
    for start in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        d = start
        while d != root and root in d.parents:
            rel = d.relative_to(root).as_posix()
            existed = await repo.git(["ls-tree", "-d", "--name-only", first_tree, "--", rel])
            if existed.strip():
                break
            try:
                d.rmdir()
            except OSError:
                break  # not empty (or gone): keep it
            d = d.parent


async def restore(read: Reader, write: Writer, home: Path, task_id: int, kind: RestoreKind, *,
                  force: bool = False) -> tuple[Plan, Outcome]:
    plan = await plan_restore(read, home, task_id, kind)
    if plan.resuming is None and not plan.files:
        raise InvalidTransition(f"task {task_id}: nothing to {kind}")
    return plan, await apply_restore(read, write, home, plan, force=force)
