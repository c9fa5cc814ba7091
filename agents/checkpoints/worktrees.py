"""Worktrees: a task of an agent with `isolation = "worktree"`, in a workspace that is a git
repository, works in a git worktree of its own on branch `agentdeck/task-N`, so agents
working at once never write the same checkout.

The worktree starts at the workspace's HEAD (what is committed; a person's uncommitted
edits are not in it). When the task ends done its changes are committed on the branch
and its result names the branch; `agentdeck merge N` merges the branch into the
workspace's checked-out branch, refusing (and touching nothing) when it would conflict.
Worktrees live beside the home (`<home>-worktrees/`), never inside the workspace, and not
in the home itself: the gate and the sandbox keep every tool out of agentdeck's home
(its database, config and rules). A merged task's worktree and
branch are removed, and an unmerged one's worktree (not its branch) after
`worktree_keep_days`."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents.checkpoints.git import GitError, run_git
from agents.errors import AgentdeckError

BRANCH_PREFIX = "agentdeck/task-"
WORKTREES_DIR = "worktrees"
DAY_S = 86_400.0


class MergeRefused(AgentdeckError):
    """The merge would conflict or cannot be done; the workspace is untouched."""


@dataclass
class Committed:
    branch: str
    files: int
    added: int
    removed: int


@dataclass
class Merged:
    branch: str
    commit: str
    files: list[str] = field(default_factory=list)


def _env(author: str = "agentdeck") -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": author, "GIT_COMMITTER_NAME": author, "GIT_LITERAL_PATHSPECS": "1",
            "XDG_CONFIG_HOME": os.devnull}


def is_repository(workspace: Path) -> bool:
    """The workspace is the top of a git repository (its own `.git` directory)."""
    return (workspace / ".git").is_dir()


class Worktrees:
    def __init__(self, home: Path, workspace: Path, keep_days: float = 7.0) -> None:
        self.home = home
        self.workspace = workspace
        self.keep_days = keep_days
        digest = hashlib.sha256(os.fsencode(workspace)).hexdigest()[:12]
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in workspace.name)[:40] or "root"
        self.root = home.parent / f"{home.name}-{WORKTREES_DIR}" / f"{slug}-{digest}"

    def path_for(self, task_id: int) -> Path:
        return self.root / f"task-{task_id}"

    @staticmethod
    def branch_for(task_id: int) -> str:
        return f"{BRANCH_PREFIX}{task_id}"

    async def _git(self, args: list[str], cwd: Path | None = None, ok: tuple[int, ...] = (0,)) -> str:
        out = await run_git(args, env=_env(), cwd=cwd or self.workspace, ok=ok)
        return out.decode(errors="replace")

    async def ensure(self, task_id: int) -> Path:
        """The task's worktree, made on first use (at the workspace's HEAD)."""
        path = self.path_for(task_id)
        if (path / ".git").exists():
            return path
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        branch = self.branch_for(task_id)
        try:
            await self._git(["rev-parse", "--verify", "--quiet", "HEAD"])
        except GitError:
            raise GitError(f"{self.workspace} has no commit yet: a worktree starts from one") from None
        exists = await self._git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], ok=(0, 1))
        await self._git(["worktree", "prune"])  # a worktree removed by hand leaves its record
        if exists.strip():
            await self._git(["worktree", "add", "--quiet", str(path), branch])
        else:
            await self._git(["worktree", "add", "--quiet", "-b", branch, str(path), "HEAD"])
        return path

    async def commit(self, task_id: int, message: str, author: str) -> Committed | None:
        """Everything the task changed in its worktree, committed on its branch; None when
        it changed nothing (or has no worktree)."""
        path = self.path_for(task_id)
        if not (path / ".git").exists():
            return None
        await run_git(["add", "-A"], env=_env(), cwd=path)
        status = await run_git(["status", "--porcelain"], env=_env(), cwd=path)
        if status.strip():
            await run_git(["commit", "--quiet", "--no-verify", "-m", message],
                          env=_env(f"agentdeck ({author})"), cwd=path)
        return await self.summary(task_id)

    async def summary(self, task_id: int) -> Committed | None:
        """The branch against where it started (its merge base with the checked-out HEAD)."""
        branch = self.branch_for(task_id)
        exists = await self._git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], ok=(0, 1))
        if not exists.strip():
            return None
        stat = await self._git(["diff", "--numstat", f"HEAD...{branch}"])
        files = added = removed = 0
        for row in stat.splitlines():
            a, r, _ = row.split("\t", 2)
            files += 1
            added += int(a) if a.isdigit() else 0
            removed += int(r) if r.isdigit() else 0
        return Committed(branch=branch, files=files, added=added, removed=removed)

    async def diff(self, task_id: int) -> str:
        return await self._git(["diff", "--no-color", f"HEAD...{self.branch_for(task_id)}"])

    async def merge(self, task_id: int) -> Merged:
        """Merge the task's branch into the checked-out branch: refused, with the files,
        when it would conflict (checked with `git merge-tree` before anything is touched)."""
        branch = self.branch_for(task_id)
        exists = await self._git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], ok=(0, 1))
        if not exists.strip():
            raise MergeRefused(f"task {task_id} has no branch {branch} (not worked in a worktree, "
                               "or merged already)")
        path = self.path_for(task_id)
        if (path / ".git").exists():
            dirty = await run_git(["status", "--porcelain"], env=_env(), cwd=path)
            if dirty.strip():
                raise MergeRefused(f"task {task_id}'s worktree {path} has uncommitted changes: "
                                   "the task has not ended done")
        files = (await self._git(["diff", "--name-only", f"HEAD...{branch}"])).split()
        if not files:
            raise MergeRefused(f"branch {branch} changes nothing against the checked-out branch")
        probe = await self._git(["merge-tree", "--write-tree", "--name-only", "--no-messages", "HEAD",
                                 branch], ok=(0, 1))
        conflicted = probe.splitlines()[1:]
        if conflicted:
            raise MergeRefused(f"merging {branch} would conflict in: {', '.join(conflicted[:20])}; "
                               "nothing was changed")
        try:
            await self._git(["merge", "--no-ff", "--no-edit", "--quiet", "-m",
                             f"agentdeck: merge task {task_id} ({branch})", branch])
        except GitError as err:
            await self._git(["merge", "--abort"], ok=(0, 128))
            raise MergeRefused(f"merging {branch} failed, nothing was changed: {err}") from None
        commit = (await self._git(["rev-parse", "HEAD"])).strip()
        await self.remove(task_id, delete_branch=True)
        return Merged(branch=branch, commit=commit, files=files)

    async def remove(self, task_id: int, *, delete_branch: bool = False) -> None:
        path = self.path_for(task_id)
        if path.exists():
            await self._git(["worktree", "remove", "--force", str(path)], ok=(0, 128))
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            await self._git(["worktree", "prune"])
        if delete_branch:
            await self._git(["branch", "-D", "--quiet", self.branch_for(task_id)], ok=(0, 1))

    def worktree_tasks(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            name = entry.name
            if name.startswith("task-") and name[5:].isdigit():
                found.append(int(name[5:]))
        return sorted(found)

    async def clean(self, ended_at: dict[int, float], now: float | None = None) -> list[int]:
        """Remove worktrees of tasks that ended more than `keep_days` ago (their branches
        stay). `ended_at`: task id -> when it ended, for ended tasks only."""
        now = time.time() if now is None else now
        removed = []
        for task_id in self.worktree_tasks():
            when = ended_at.get(task_id)
            if when is not None and now - when >= self.keep_days * DAY_S:
                await self.remove(task_id)
                removed.append(task_id)
        return removed
