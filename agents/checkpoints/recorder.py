"""Checkpoints around each writing tool call: the workspace snapshotted before and after,
and the difference recorded against the call (and so its task) for `changes` and `undo`.

A call is never held back by its checkpoint: when git fails or is missing the call still
runs, and its checkpoint row says `failed` with the reason, so `changes` says plainly that
the call was not recorded. What a call did to a file that was not checkpointed (over a cap,
unreadable) is seen by its stat and listed as such.

Snapshots at once (two agents' calls, `agentdeck tool run` beside the host) each use an
index file of their own from a small pool: git's stat cache lives in the index, so a name
used again is a warm cache. Another process holding the same index is waited for."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from agents.checkpoints.git import GitError
from agents.checkpoints.shadow import Limits, ShadowRepo, Skipped, Snapshot
from agents.config import CheckpointConfig
from agents.protocol import Checkpoint, NotCheckpointed
from agents.store import reducers as r
from agents.tools.base import AgentStore

log = logging.getLogger(__name__)

WRITING_TOOLS = frozenset({"write_file", "edit_file", "append_file", "run_shell"})
LOCK_RETRIES = 8  # another process's snapshot on the same index: 0.1 s doubling, ~25 s in all
AFTER_CANCEL_S = 10.0  # a cancelled call's after-snapshot: bounded, so SIGTERM still ends soon


def limits_of(config: CheckpointConfig) -> Limits:
    mib = 1024 * 1024
    return Limits(max_file_bytes=int(config.max_file_mb * mib),
                  max_snapshot_bytes=int(config.max_snapshot_mb * mib))


@dataclass
class Before:
    repo: ShadowRepo
    index: str
    snapshot: Snapshot | None
    error: str = ""
    released: bool = field(default=False)


class Checkpointer:
    def __init__(self, home: Path, config: CheckpointConfig) -> None:
        self.home = home
        self.config = config
        self.limits = limits_of(config)
        self._repos: dict[Path, ShadowRepo] = {}
        self._busy: set[str] = set()

    def repo(self, workspace: Path) -> ShadowRepo:
        found = self._repos.get(workspace)
        if found is None:
            found = self._repos[workspace] = ShadowRepo(self.home, workspace, self.limits)
        return found

    def _claim(self) -> str:
        n = 0
        while str(n) in self._busy:
            n += 1
        self._busy.add(str(n))
        return str(n)

    async def _snapshot(self, repo: ShadowRepo, index: str) -> Snapshot:
        delay = 0.1
        for attempt in range(LOCK_RETRIES + 1):
            try:
                return await repo.snapshot(index)
            except GitError as err:
                if "index.lock" not in str(err) or attempt == LOCK_RETRIES:
                    raise
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def before(self, workspace: Path) -> Before:
        repo = self.repo(workspace)
        index = self._claim()
        try:
            return Before(repo, index, await self._snapshot(repo, index))
        except GitError as err:
            log.warning("checkpoint before a call failed: %s", err)
            return Before(repo, index, None, error=str(err))
        except BaseException:
            self._busy.discard(index)
            raise

    async def after(self, before: Before, store: AgentStore, tool_call_id: int, *,
                    cancelled: bool = False) -> Checkpoint | None:
        """Record the call's effect; None when it changed nothing (no row is written)."""
        try:
            return await self._record(before, store, tool_call_id, cancelled)
        finally:
            self._busy.discard(before.index)

    async def _record(self, before: Before, store: AgentStore, call_id: int,
                      cancelled: bool) -> Checkpoint | None:
        workspace = str(before.repo.workspace)
        if before.snapshot is None:
            return await store.write(r.record_checkpoint, workspace=workspace, before_tree=None,
                                     after_tree=None, files=[], tool_call_id=call_id,
                                     failed=f"not checkpointed: {before.error}")
        try:
            if cancelled:
                async with asyncio.timeout(AFTER_CANCEL_S):
                    after = await self._snapshot(before.repo, before.index)
            else:
                after = await self._snapshot(before.repo, before.index)
            files = await before.repo.diff(before.snapshot.tree, after.tree)
        except (GitError, TimeoutError) as err:
            why = str(err) or f"no snapshot in {AFTER_CANCEL_S:.0f} s"
            return await store.write(r.record_checkpoint, workspace=workspace,
                                     before_tree=before.snapshot.tree, after_tree=None, files=[],
                                     tool_call_id=call_id,
                                     failed=f"not checkpointed after the call: {why}")
        skipped = changed_skips(before.snapshot.skipped, after.skipped)
        if not files and not skipped:
            return None
        return await store.write(r.record_checkpoint, workspace=workspace,
                                 before_tree=before.snapshot.tree, after_tree=after.tree, files=files,
                                 skipped=skipped, tool_call_id=call_id)


def changed_skips(before: list[Skipped], after: list[Skipped]) -> list[NotCheckpointed]:
    """Files left out of a snapshot that the call changed (created, modified, removed)."""
    then = {s.path: s for s in before}
    now = {s.path: s for s in after}
    found: list[NotCheckpointed] = []
    for path in sorted(then.keys() | now.keys()):
        a, b = then.get(path), now.get(path)
        if a is not None and b is not None and (a.size, a.mtime_ns) == (b.size, b.mtime_ns):
            continue
        if b is None:
            found.append(NotCheckpointed(path=path, reason=f"{a.reason if a else ''}; changed or removed"))
        else:
            found.append(NotCheckpointed(path=path, reason=b.reason))
    return found
