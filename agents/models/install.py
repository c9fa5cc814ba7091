"""What every source shares: the pull's progress, the disk-space check, the private
`.partial` workspace, hashing while writing, and the one step that makes a model
visible (verified file moved into place with os.replace, then its manifest entry)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import msgspec

from agents.errors import AgentdeckError
from agents.home import PRIVATE_DIR, PRIVATE_FILE
from agents.models.manifest import PARTIAL_DIR, InstalledModel, ensure_models_dir, record

CHUNK = 1 << 20
HEADROOM = 32 << 20  # left free after a pull, so the database and logs keep working


class PullError(AgentdeckError):
    """A pull failed; nothing was installed. The message is one line and says what stays."""


class PullProgress(Protocol):
    """What a pull reports; the CLI draws it (a Rich bar on a terminal, lines otherwise)."""

    def note(self, text: str) -> None: ...

    def start(self, label: str, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...

    def stop(self) -> None: ...


class QuietProgress:
    def note(self, text: str) -> None:
        pass

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def stop(self) -> None:
        pass


class PullResult(msgspec.Struct, frozen=True, kw_only=True):
    model: InstalledModel
    path: str
    fetched: int = 0  # parts (or files) downloaded by this pull
    reused: int = 0  # parts a previous, unfinished pull had left in the cache
    already: bool = False  # it was installed before: nothing was done


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_space(directory: Path, need: int) -> str:
    """A line naming the free and needed bytes; PullError when they do not fit."""
    free = shutil.disk_usage(directory).free
    text = (f"{directory}: {free:,} bytes free ({size_text(free)}), this pull needs {need:,} "
            f"({size_text(need)})")
    if free < need + HEADROOM:
        raise PullError(f"not enough disk space: {text} and {size_text(HEADROOM)} to spare; "
                        "free some space and pull again; nothing was downloaded")
    return text


def partial_dir(home: Path, name: str) -> Path:
    return ensure_models_dir(home) / PARTIAL_DIR / name


def make_partial_dir(home: Path, name: str) -> Path:
    path = partial_dir(home, name)
    path.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive_pull(home: Path, name: str) -> Iterator[Path]:
    """The partial directory of `name`, held by this pull alone: two pulls of one model
    would write the same files."""
    path = make_partial_dir(home, name)
    fd = os.open(path.parent / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PullError(f"another `agentdeck models pull {name}` is running; wait for it") from None
        yield path
    finally:
        os.close(fd)


class HashingWriter:
    """A new private file written in chunks, its sha256 and size counted on the way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def copy_from(self, source: BinaryIO, progress: PullProgress) -> None:
        while chunk := source.read(CHUNK):
            self._file.write(chunk)
            self._hash.update(chunk)
            self.size += len(chunk)
            progress.advance(len(chunk))

    def finish(self) -> str:
        """Flush to disk (before the rename makes it the model); the sha256."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def sha256_of(path: Path, progress: PullProgress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    return digest.hexdigest()


def mismatch(name: str, size: int, sha256: str, want_size: int | None, want_sha: str | None) -> str | None:
    """What differs from what was expected, or None."""
    if (want_size is None or size == want_size) and (want_sha is None or sha256 == want_sha):
        return None
    want = f"{want_size:,} bytes" if want_size is not None else "any size"
    want += f", sha256 {want_sha[:16]}…" if want_sha else ""
    return f"{name}: the downloaded file is {size:,} bytes, sha256 {sha256[:16]}…; expected {want}"


def install(home: Path, name: str, verified: Path, *, size: int, sha256: str, source: str) -> InstalledModel:
    """Move a verified GGUF into place as `<models>/NAME.gguf`, then record it."""
    from agents.inference.model import GGUF_MAGIC

    with verified.open("rb") as f:
        if f.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise PullError(f"{name}: the file is not a GGUF model")
    target = ensure_models_dir(home) / f"{name}.gguf"
    os.chmod(verified, PRIVATE_FILE)
    os.replace(verified, target)
    model = InstalledModel(name=name, file=target.name, size=size, sha256=sha256, source=source,
                           installed_at=time.time())
    try:
        record(home, model)
    except BaseException:  # no file without its entry either
        target.unlink(missing_ok=True)
        raise
    return model


def disk_error(err: OSError, where: Path) -> str:
    """One line for an OSError while writing under `where`."""
    if err.errno == errno.ENOSPC:
        free = shutil.disk_usage(where).free
        return f"disk full writing under {where} ({free:,} bytes free)"
    return f"{err.filename or where}: {err.strerror or err}"


__all__ = [
    "HashingWriter", "PullError", "PullProgress", "PullResult", "QuietProgress", "check_space",
    "disk_error", "exclusive_pull", "install", "mismatch", "partial_dir", "sha256_of", "size_text",
]
