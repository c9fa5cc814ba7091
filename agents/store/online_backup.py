"""A consistent copy of the live database through SQLite's online backup API."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgspec

from agents.home import create_private_file
from agents.store.database import disk_full, open_database

COUNTED_TABLES = ("events", "tasks", "approvals", "tool_calls", "memory", "messages")


class BackupResult(msgspec.Struct, kw_only=True):
    path: str
    bytes: int
    integrity: list[str]  # PRAGMA integrity_check of the copy: ["ok"] when sound
    counts: dict[str, int]  # rows per table in the copy


def backup_database(db: Path, dest: Path) -> BackupResult:
    """Copy `db` to `dest` (0600, replaced atomically), then check the copy.

    One backup step copies every page inside one read transaction: a snapshot of a
    single moment, while a running instance goes on writing to the WAL.
    """
    source = open_database(db, create=False)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        create_private_file(partial)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # pages=-1: all at once, one snapshot
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            integrity = [row[0] for row in copy.execute("PRAGMA integrity_check(10)")]
            counts = {t: copy.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COUNTED_TABLES}
        finally:
            copy.close()
        os.replace(partial, dest)
    except (sqlite3.Error, OSError) as err:
        partial.unlink(missing_ok=True)
        # The copy needs about as much room as the database and its WAL.
        raise disk_full(dest, err, need=_size(db) + _size(Path(f"{db}-wal"))) or err from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    return BackupResult(path=str(dest), bytes=dest.stat().st_size, integrity=integrity, counts=counts)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
