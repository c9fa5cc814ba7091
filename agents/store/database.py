"""Opening the SQLite file: checks that never touch a file we cannot use, pragmas, migrations."""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import re
import shutil
import sqlite3
import sys
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
    """sqlite-vec's functions on `conn` (memory recall by meaning). Without them (the
    package missing, or a SQLite that cannot load extensions) everything else works and
    recall is by words alone."""
    try:
        import sqlite_vec
    except ImportError as err:
        log.debug("sqlite-vec not loaded: %s", err)
        return False
    try:
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(True)
            try:
                sqlite_vec.load(conn)
            finally:
                conn.enable_load_extension(False)
            return True
        return _load_through_c_api(conn, sqlite_vec.loadable_path())
    except (AttributeError, OSError, sqlite3.Error) as err:
        log.debug("sqlite-vec not loaded: %s", err)
        return False


@functools.cache
def _linked_sqlite() -> ctypes.CDLL | None:
    """The libsqlite3 this process's sqlite3 module runs on (Linux, dynamically linked),
    never another copy: dlopen of a loaded library's own path returns that library."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "libsqlite3" in line and "/" in line}
    except OSError:
        return None
    return ctypes.CDLL(paths.pop()) if len(paths) == 1 else None


def _load_through_c_api(conn: sqlite3.Connection, extension: str) -> bool:
    """For a Python built without loadable-extension support (pyenv's default): switch
    extension loading on for this one connection through SQLite's C API, load, switch it
    off. Only on CPython with the system libsqlite3, and only once the handle read from the
    connection object proves to be this connection's (its file name matches)."""
    if sys.implementation.name != "cpython":
        return False
    lib = _linked_sqlite()
    if lib is None:
        return False
    lib.sqlite3_db_filename.restype = ctypes.c_char_p
    lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.sqlite3_enable_load_extension.argtypes = [ctypes.c_void_p, ctypes.c_int]
    # CPython's connection object holds its `sqlite3 *` right after the object header.
    handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not handle:
        return False
    main = conn.execute("PRAGMA database_list").fetchone()[2] or ""
    if (lib.sqlite3_db_filename(handle, b"main") or b"").decode("utf-8", "replace") != main:
        return False
    if lib.sqlite3_enable_load_extension(handle, 1) != 0:
        return False
    try:
        conn.execute("SELECT load_extension(?, 'sqlite3_vec_init')", (extension,))
    finally:
        lib.sqlite3_enable_load_extension(handle, 0)
    return True


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
