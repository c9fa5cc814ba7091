"""File operations that cannot be redirected by a symlink swapped in after the check.

Every operation walks from the workspace's directory descriptor one component at a time
with O_NOFOLLOW, so a directory replaced by a symlink (to /etc, say) between the policy's
decision and the operation makes it fail instead of following the link. Writes go to a
temp file in the final directory and are renamed over the name: a symlink at the name is
replaced, never written through.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A component is a symlink or not a directory: refused."""


def _parts(relative: str) -> list[str]:
    parts = [p for p in PurePosixPath(relative).parts if p not in ("", ".")]
    if any(p == ".." or "/" in p for p in parts):
        raise UnsafePath(f"{relative}: not a plain path below the workspace")
    return parts


@contextmanager
def _directory(workspace: Path, parts: list[str], *, create: bool = False) -> Iterator[int]:
    """A descriptor for workspace/parts..., walked without following any symlink."""
    fd = os.open(workspace, DIR_FLAGS)
    try:
        for part in parts:
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as err:  # ELOOP: a symlink; ENOTDIR: a file
                raise UnsafePath(f"{part}: {err.strerror} (symlinks are not followed)") from None
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def read_bytes(workspace: Path, relative: str, max_bytes: int) -> tuple[bytes, int]:
    """(up to max_bytes of the file, its full size)."""
    parts = _parts(relative)
    if not parts:
        raise IsADirectoryError(f"{relative or '.'}: is a directory")
    with _directory(workspace, parts[:-1]) as dfd:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError as err:
            if err.errno == 40:  # ELOOP
                raise UnsafePath(f"{relative}: a symlink (not followed)") from None
            raise
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(f"{relative}: is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePath(f"{relative}: not a regular file")
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read(max_bytes), info.st_size
        finally:
            os.close(fd)


def write_bytes(workspace: Path, relative: str, data: bytes) -> None:
    """Replace (or create) the file atomically; missing parent directories are made."""
    parts = _parts(relative)
    if not parts:
        raise IsADirectoryError(f"{relative or '.'}: is a directory")
    name = parts[-1]
    with _directory(workspace, parts[:-1], create=True) as dfd:
        mode = 0o644
        with contextlib.suppress(FileNotFoundError):  # a new file keeps the default mode
            old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(old.st_mode):
                raise IsADirectoryError(f"{relative}: is a directory")
            if stat.S_ISREG(old.st_mode):
                mode = stat.S_IMODE(old.st_mode)
        tmp = f".{name}.agentdeck-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise


def list_entries(workspace: Path, relative: str) -> list[tuple[str, str, int]]:
    """(name, kind, size) of each entry: kind is dir, file, link or other."""
    out = []
    with _directory(workspace, _parts(relative)) as dfd, os.scandir(dfd) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            kind = ("link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode)
                    else "file" if stat.S_ISREG(info.st_mode) else "other")
            out.append((entry.name, kind, info.st_size))
    return sorted(out)
