"""agentdeck's home: private to its user, and files in it read without surprises.

The home holds the database (task bodies, tool output, approvals), the config and the
secret names: other local users must not read any of it. The home is 0700 and every file
in it 0600, whatever the umask; loose modes found on open are tightened (and reported
once, since they stay fixed). SQLite gives the WAL and shared-memory files the database
file's mode, so creating the database 0600 covers them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
LOOSE_BITS = 0o077  # any permission for group or others


def loose_permissions(home: Path) -> list[tuple[Path, int]]:
    """(path, mode) of the home and of each entry directly in it that group or others
    may use. Read-only: for doctor."""
    found: list[tuple[Path, int]] = []
    try:
        mode = home.stat().st_mode
    except FileNotFoundError:
        return found
    if mode & LOOSE_BITS:
        found.append((home, stat.S_IMODE(mode)))
    with os.scandir(home) as entries:
        for entry in entries:
            if entry.is_symlink():
                continue  # never chmod through a link to somewhere else
            mode = entry.stat(follow_symlinks=False).st_mode
            if (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and mode & LOOSE_BITS:
                found.append((Path(entry.path), stat.S_IMODE(mode)))
    return found


def make_private_home(home: Path) -> list[str]:
    """Create `home` 0700 if missing; tighten loose modes of it and its entries.
    Returns one note per path changed (`agentdeck.db 0644 -> 0600`)."""
    home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    notes = []
    for path, mode in loose_permissions(home):
        new = mode & ~LOOSE_BITS
        os.chmod(path, new, follow_symlinks=False)
        name = str(path) if path == home else path.name
        notes.append(f"{name} {mode:04o} -> {new:04o}")
    return notes


def create_private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (before SQLite creates it with
    the umask's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        return
    os.close(fd)


def write_private_text(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600 (a temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class NotARegularFile(OSError):
    """The path is a FIFO, a device, a directory or a socket: reading it could block
    forever or never end."""


class FileTooLarge(OSError):
    """The file is larger than the caller allows."""


def read_regular_text(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`.

    Opened non-blocking and checked with fstat on the open descriptor, so a FIFO or a
    device (swapped in at any moment) is refused instead of hanging every command.
    Raises FileNotFoundError, NotARegularFile, FileTooLarge, OSError, UnicodeDecodeError.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise FileTooLarge(f"{path}: larger than {max_bytes // 1024} KiB")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew after fstat
        raise FileTooLarge(f"{path}: larger than {max_bytes // 1024} KiB")
    return data.decode("utf-8")
