"""A shadow git repository that records a workspace's files, never touching its own `.git`.

`git --git-dir=HOME/checkpoints/<workspace>.git --work-tree=WORKSPACE`: a snapshot is
`git add -A` into an index of the shadow's own, then `git write-tree`, so a snapshot is one
tree hash and two snapshots' difference is `git diff-tree`. git's stat cache makes a
snapshot of an unchanged large tree cheap (it re-reads only files whose stat changed), and
it honours the workspace's `.gitignore` files and `.git/info/exclude` as a person expects.

Caps: a file over `max_file_bytes`, or past `max_snapshot_bytes` of new content in one
snapshot, or unreadable, is not checkpointed: it is left out of the tree and reported
with its reason and its stat, so a change to it is still seen and said plainly.

Objects are never pruned here (`gc.auto = 0`): a tree an old checkpoint names must stay
readable for an undo."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from agents.checkpoints.git import GitError, run_git
from agents.protocol import ChangedFile, FileState

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's tree of nothing
SHADOW_DIR = "checkpoints"


class Skipped(msgspec.Struct, kw_only=True, frozen=True):
    """A path left out of a snapshot: why, and its stat then (to see whether it changed)."""

    path: str
    reason: str
    size: int = -1
    mtime_ns: int = -1


@dataclass
class Snapshot:
    tree: str
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 10 * 1024 * 1024
    max_snapshot_bytes: int = 200 * 1024 * 1024


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def workspace_entry(path: Path) -> FileState | None:
    """What git would record for `path` now; None when nothing is there. A directory (or
    anything but a file or a link) is FileState('040000', '') — never equal to a file's."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return FileState("120000", blob_id(os.fsencode(os.readlink(path))))
        if stat.S_ISREG(st.st_mode):
            return FileState("100755" if st.st_mode & stat.S_IXUSR else "100644", blob_id(path.read_bytes()))
        return FileState("040000", "")
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def shadow_dir(home: Path, workspace: Path) -> Path:
    """One shadow repository per workspace, named so a person can tell which is which."""
    digest = hashlib.sha256(os.fsencode(workspace)).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in workspace.name)[:40] or "root"
    return home / SHADOW_DIR / f"{slug}-{digest}.git"


class ShadowRepo:
    def __init__(self, home: Path, workspace: Path, limits: Limits | None = None) -> None:
        self.workspace = workspace
        self.home = home
        self.git_dir = shadow_dir(home, workspace)
        self.limits = limits or Limits()
        self._ready = False

    def _env(self, index: str | None = None) -> dict[str, str]:
        env = {"GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.workspace),
               "GIT_LITERAL_PATHSPECS": "1", "XDG_CONFIG_HOME": os.devnull}
        if index is not None:
            env["GIT_INDEX_FILE"] = str(self.git_dir / f"index-{index}")
        return env

    async def git(self, args: list[str], *, index: str | None = None, stdin: bytes | None = None,
                  ok: tuple[int, ...] = (0,), literal: bool = True) -> bytes:
        env = self._env(index)
        cwd = self.workspace
        if not self.workspace.is_dir() and (self.git_dir / "HEAD").exists():
            # The workspace is gone (a merged task's worktree): its recorded trees are
            # still read here. These reads never look at the work tree's files.
            cwd = self.git_dir
            env["GIT_WORK_TREE"] = str(self.git_dir)
        if not literal:
            env.pop("GIT_LITERAL_PATHSPECS")
        return await run_git(args, env=env, cwd=cwd, stdin=stdin, ok=ok)

    async def ensure(self) -> None:
        """Create the shadow repository once; point its excludes at the workspace's own."""
        if self._ready:
            return
        if not self.workspace.is_dir() and (self.git_dir / "HEAD").exists():
            return  # gone since: what was recorded can be read, nothing snapshotted
        if not self.workspace.is_dir():
            raise GitError(f"workspace {self.workspace} is not a directory")
        if not (self.git_dir / "HEAD").exists():
            self.git_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            await self.git(["init", "--quiet"])
            for key, value in (("core.autocrlf", "false"), ("core.filemode", "true"),
                               ("core.symlinks", "true"), ("core.quotepath", "false"), ("gc.auto", "0"),
                               ("core.untrackedCache", "true"), ("index.version", "4"),
                               ("advice.addEmbeddedRepo", "false"), ("core.safecrlf", "false")):
                await self.git(["config", key, value])
        self._write_excludes()
        self._ready = True

    def _write_excludes(self) -> None:
        """The shadow's info/exclude: the workspace's own `.git/info/exclude` and, when the
        home lies inside the workspace, the home (its database and this repository)."""
        lines = ["# written by agentdeck: the workspace's own excludes, and its home"]
        own = self.workspace / ".git" / "info" / "exclude"
        try:
            lines.append(own.read_text(errors="replace"))
        except OSError:
            pass
        try:
            inside = self.home.resolve().relative_to(self.workspace)
            lines.append("/" + str(inside).replace("\\", "\\\\") + "/")
        except ValueError:
            pass
        path = self.git_dir / "info" / "exclude"
        path.parent.mkdir(exist_ok=True)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text(errors="replace") != text:
            path.write_text(text)

    async def snapshot(self, index: str = "0") -> Snapshot:
        """The workspace now, as a tree; what could not be recorded, with why."""
        if not self.workspace.is_dir():
            raise GitError(f"workspace {self.workspace} is not a directory")
        await self.ensure()
        listed = await self.git(["ls-files", "-z", "--others", "--modified", "--exclude-standard"],
                                index=index)
        skipped: list[Skipped] = []
        excluded: list[str] = []
        total = 0
        for raw in dict.fromkeys(listed.split(b"\0")):
            if not raw:
                continue
            name = os.fsdecode(raw)
            path = self.workspace / name
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone: a deletion, which git records
            if not stat.S_ISREG(st.st_mode):
                continue
            reason = ""
            if st.st_size > self.limits.max_file_bytes:
                reason = f"over the {mib(self.limits.max_file_bytes)} file cap ({mib(st.st_size)})"
            elif not os.access(path, os.R_OK):
                reason = "unreadable"
            elif total + st.st_size > self.limits.max_snapshot_bytes:
                reason = f"past the {mib(self.limits.max_snapshot_bytes)} snapshot cap"
            if reason:
                skipped.append(Skipped(path=name, reason=reason, size=st.st_size, mtime_ns=st.st_mtime_ns))
                excluded.append(name)
            else:
                total += st.st_size
        specs = b"\0".join([b":(top)"] + [b":(exclude,literal,top)" + os.fsencode(p) for p in excluded])
        await self.git(["add", "-A", "--ignore-errors", "--pathspec-from-file=-", "--pathspec-file-nul"],
                       index=index, stdin=specs + b"\0", literal=False)
        tree = (await self.git(["write-tree"], index=index)).decode().strip()
        return Snapshot(tree=tree, skipped=skipped)

    async def diff(self, before: str, after: str) -> list[ChangedFile]:
        """Every path that differs between two trees, with +/- line counts."""
        if before == after:
            return []
        await self.ensure()
        raw = await self.git(["diff-tree", "-r", "-z", "--no-renames", "--raw", before, after])
        numstat = await self.git(["diff-tree", "-r", "-z", "--no-renames", "--numstat", before, after])
        counts: dict[str, tuple[int | None, int | None]] = {}
        for record in numstat.split(b"\0"):
            if not record:
                continue
            added, removed, name = record.split(b"\t", 2)
            counts[os.fsdecode(name)] = (None, None) if added == b"-" else (int(added), int(removed))
        changes: list[ChangedFile] = []
        parts = raw.split(b"\0")
        i = 0
        while i + 1 < len(parts) and parts[i]:
            old_mode, new_mode, old_blob, new_blob, status = parts[i][1:].decode().split(" ")
            name = os.fsdecode(parts[i + 1])
            added, removed = counts.get(name, (None, None))
            changes.append(ChangedFile(path=name, status=status[0], old_mode=old_mode, new_mode=new_mode,
                                      old_blob=old_blob, new_blob=new_blob, added=added, removed=removed))
            i += 2
        return changes

    async def patch(self, before: str, after: str, paths: list[str] | None = None) -> str:
        """The unified diff between two trees (of `paths` only, when given)."""
        if before == after:
            return ""
        await self.ensure()
        out = await self.git(["diff-tree", "-p", "-r", "--no-renames", "--no-color", before, after, "--",
                              *(paths or [])])
        return out.decode(errors="replace")

    async def entries(self, tree: str, paths: list[str]) -> dict[str, FileState]:
        """The entries of `paths` in `tree`; a path absent from it is absent here."""
        if not paths or tree == EMPTY_TREE:
            return {}
        await self.ensure()
        found: dict[str, FileState] = {}
        for start in range(0, len(paths), 500):  # keep each command line short
            part = paths[start:start + 500]
            out = await self.git(["ls-tree", "-r", "-z", "--full-tree", tree, "--", *part])
            for record in out.split(b"\0"):
                if not record:
                    continue
                meta, name = record.split(b"\t", 1)
                mode, _kind, blob = meta.decode().split(" ")
                found[os.fsdecode(name)] = FileState(mode, blob)
        return found

    async def tree_of(self, states: dict[str, FileState]) -> str:
        """A tree holding exactly these paths in these states (built in a scratch index):
        a task's net change becomes one diff between two such trees."""
        if not states:
            return EMPTY_TREE
        await self.ensure()
        scratch = f"scratch-{os.getpid()}-{id(states)}"
        lines = b"".join(b"%s %s\t%s\0" % (st.mode.encode(), st.blob.encode(), os.fsencode(path))
                         for path, st in sorted(states.items()))
        try:
            await self.git(["update-index", "--add", "-z", "--index-info"], index=scratch, stdin=lines)
            return (await self.git(["write-tree"], index=scratch)).decode().strip()
        finally:
            (self.git_dir / f"index-{scratch}").unlink(missing_ok=True)

    async def blob(self, blob: str) -> bytes:
        await self.ensure()
        return await self.git(["cat-file", "blob", blob])


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"
