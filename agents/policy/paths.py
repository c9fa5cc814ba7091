"""Where a path argument really points, decided by path components, never by prefixes.

`~` is the user's home, a relative path is relative to the workspace, and symlinks and
`..` are resolved to the real location. Inside means below the workspace's real path by
components: `/work/app-evil` is not inside `/work/app`. agentdeck's own home (database,
config, rules, secret names) is refused even when it lies inside the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class ResolvedPath(msgspec.Struct, frozen=True, kw_only=True):
    raw: str
    real: str  # absolute, symlinks and .. resolved
    relative: str | None  # to the workspace, when inside it
    problem: str | None  # why it may not be used at all (outside, agentdeck's home, ...)
    in_git: bool  # below a .git directory: hooks and config there run code


def real_path(path: Path | str) -> Path:
    """The real location; a symlink loop or a missing tail resolves as far as it can."""
    return Path(os.path.realpath(path))


def resolve_path(raw: str, workspace: Path, home: Path) -> ResolvedPath:
    workspace_real = real_path(workspace)
    home_real = real_path(home)
    if not raw or "\x00" in raw:
        return ResolvedPath(raw=raw, real="", relative=None, problem="an empty or NUL path",
                            in_git=False)
    expanded = Path(os.path.expanduser(raw))
    absolute = expanded if expanded.is_absolute() else workspace_real / expanded
    real = real_path(absolute)
    problem: str | None = None
    relative: str | None = None
    try:
        os.path.realpath(absolute, strict=True)
    except FileNotFoundError:
        pass  # a new file: its missing tail has no links to follow
    except OSError as err:  # ELOOP: a symlink loop has no real location
        return ResolvedPath(raw=raw, real=str(real), relative=None, in_git=False,
                            problem=f"cannot be resolved ({err.strerror})")
    if real == home_real or real.is_relative_to(home_real) or _is_within(absolute, home_real):
        problem = "agentdeck's own home (its database, config and rules) is never a tool's to touch"
    elif not real.is_relative_to(workspace_real):
        problem = f"outside the workspace {workspace_real}"
    else:
        relative = real.relative_to(workspace_real).as_posix()
    in_git = relative is not None and ".git" in Path(relative).parts
    return ResolvedPath(raw=raw, real=str(real), relative=relative, problem=problem, in_git=in_git)


def _is_within(path: Path, directory: Path) -> bool:
    """`path` as written (before symlinks) names something below `directory`."""
    normal = Path(os.path.normpath(path))
    return normal == directory or normal.is_relative_to(directory)
