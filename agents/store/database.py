"""Opening the SQLite file: checks that never touch a file we cannot use, pragmas, migrations."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from agents.errors import StoreOpenError
from agents.home import create_private_file
from agents.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000
# After a checkpoint the WAL is truncated to this size, not left at its high-water mark.
JOURNAL_SIZE_LIMIT = 64 << 20
# Room asked for on a full disk beyond the WAL: its SHM, a few transactions, a checkpoint.
DISK_ROOM = 4 << 20
SQLITE_IOERR, SQLITE_FULL = 10, 13  # primary result codes (the low byte of extended ones)


class DiskFullError(StoreOpenError):
    """The disk is full: the database may be perfectly sound, and must not be replaced."""

    exit_code = 1


def room_error(path: Path, need: int | None = None) -> DiskFullError | None:
    """A disk-full error when the filesystem holding `path` has less than `need` bytes free
    (default: the database's WAL plus DISK_ROOM), else None."""
    where = path if path.is_dir() else path.parent
    if need is None:
        try:
            need = os.stat(f"{path}-wal").st_size + DISK_ROOM
        except OSError:
            need = DISK_ROOM
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    if free >= need:
        return None
    return DiskFullError(f"disk full: {where} has {free:,} bytes free; free at least "
                         f"{need / 2**20:.1f} MiB")


def disk_full(path: Path, err: BaseException, need: int | None = None) -> DiskFullError | None:
    """`err` as a disk-full error when that is what it is: ENOSPC, SQLITE_FULL, or the
    "disk I/O error" SQLite gives when its WAL or SHM cannot grow (told by the free space)."""
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(err, OSError):
        full, maybe = err.errno in (errno.ENOSPC, errno.EDQUOT), False
    elif isinstance(code, int):
        full, maybe = code & 0xFF == SQLITE_FULL, code & 0xFF == SQLITE_IOERR
    else:
        return None
    if full:
        return room_error(path, need) or DiskFullError(f"disk full: {path}: {err}")
    return room_error(path, need) if maybe else None


def check_file(path: Path) -> None:
    """Refuse, without writing a byte, a path that is not a usable database file."""
    if not path.exists():
        if not path.parent.is_dir():
            raise StoreOpenError(f"database {path}: directory {path.parent} does not exist")
        return
    if not path.is_file():
        raise StoreOpenError(f"database {path}: not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreOpenError(f"database {path}: not readable and writable by this user")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as err:
        raise StoreOpenError(f"database {path}: cannot read ({err.strerror})") from None
    if head and head != SQLITE_MAGIC:
        raise StoreOpenError(
            f"database {path}: not an SQLite database (file left untouched; move it "
            "away or pass --home DIR)"
        )


def load_vector_functions(conn: sqlite3.Connection) -> bool:
    """Vector distance on `conn` for recall by meaning: sqlite-vec's functions where this
    Python can load SQLite extensions (True), else `vec_distance_cosine` as a Python
    function over the same float32 blobs (False; pyenv's default build cannot load
    extensions). Either way the SQL is the same and recall by meaning works."""
    try:
        import sqlite_vec

        conn.enable_load_extension(True)
        try:
            sqlite_vec.load(conn)
        finally:
            conn.enable_load_extension(False)
        return True
    except (ImportError, AttributeError, sqlite3.Error) as err:
        log.debug("sqlite-vec not loaded (%s): vector distance in Python", err)
    conn.create_function("vec_distance_cosine", 2, _cosine_distance, deterministic=True)
    return False


def _cosine_distance(a: bytes | None, b: bytes | None) -> float | None:
    """sqlite-vec's vec_distance_cosine over float32 blobs: 1 - cosine similarity (1.0,
    nothing alike, for a zero vector; NULL for a missing or mismatched one)."""
    import numpy as np

    if not isinstance(a, bytes) or not isinstance(b, bytes) or len(a) != len(b) or len(a) % 4:
        return None
    x, y = np.frombuffer(a, dtype="<f4"), np.frombuffer(b, dtype="<f4")
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 1.0 if norms == 0.0 else 1.0 - float(np.dot(x, y)) / norms


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.row_factory = sqlite3.Row
    load_vector_functions(conn)
    return conn


def open_database(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (creating and migrating when needed) the database at `path`.

    Raises StoreOpenError for a file that is unreadable, not a database, damaged, or from
    a newer schema; such a file is left exactly as it was.
    """
    path = Path(path)
    in_memory = str(path) == ":memory:"  # SQLite's name for a private in-memory database
    if not in_memory:
        check_file(path)
    if not in_memory and not path.exists():
        if not create:
            raise StoreOpenError(f"database {path}: does not exist")
        try:
            create_private_file(path)  # 0600; SQLite gives its WAL and SHM the same mode
        except OSError as err:
            raise disk_full(path, err) or err from None
    try:
        conn = _connect(path)
    except sqlite3.Error as err:
        raise disk_full(path, err) or StoreOpenError(f"database {path}: cannot open ({err})") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # One statement, one snapshot: another process may be migrating right now.
        version, objects = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), "
            "(SELECT COUNT(*) FROM sqlite_master)"
        ).fetchone()
        if version > SCHEMA_VERSION:
            raise StoreOpenError(
                f"database {path}: schema version {version} is newer than this agentdeck "
                f"understands ({SCHEMA_VERSION}); upgrade agentdeck"
            )
        if version == 0 and objects:
            # Our migrations bump user_version with their first tables, atomically: tables
            # without a version are another program's database. Never migrate into it.
            raise StoreOpenError(
                f"database {path}: an SQLite database, but not an agentdeck database (file left "
                "untouched; move it away or pass --home DIR)"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS
        # crash or power cut can lose the last transactions.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        _migrate(conn, version)
    except sqlite3.OperationalError as err:
        # Locked by another process past the busy timeout, disk I/O, read-only media: the
        # file may be perfectly healthy, so don't call it damaged.
        conn.close()
        raise disk_full(path, err) or StoreOpenError(
            f"database {path}: cannot use it right now ({err})") from None
    except sqlite3.DatabaseError as err:
        conn.close()
        raise StoreOpenError(
            f"database {path}: damaged or not a database ({err}); `agentdeck doctor` says more"
        ) from None
    except UnicodeDecodeError:  # SQLite quoted damaged schema bytes in its error message
        conn.close()
        raise StoreOpenError(
            f"database {path}: damaged (malformed schema); `agentdeck doctor` says more"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into single statements (triggers' inner `;` included)."""
    buf = ""
    for part in re.split(r"(?<=;)", script):
        buf += part
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf


def _migrate(conn: sqlite3.Connection, current: int) -> None:
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        # One transaction per step, version bump included. The version is read again under
        # the write lock: another process opening the same file may have migrated since.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current < version:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy the whole WAL into the database and truncate it to zero bytes (when no
    reader holds an old snapshot; else as much as it can, and again next time).
    Returns (busy, WAL frames, frames checkpointed), as SQLite does."""
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(busy), int(frames), int(done)


def wal_bytes(conn: sqlite3.Connection) -> int:
    """The size of this database's WAL file (0 when there is none)."""
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0
