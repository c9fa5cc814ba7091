"""The store against a real SQLite file: schema, opening, migrations, and every reducer domain."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import as_unprivileged

from agents.errors import (
    InvalidArgument,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ReducerError,
    StoreOpenError,
    TaskTreeTooLarge,
)
from agents.protocol import (
    OWNER,
    PROTOCOL_VERSION,
    SYSTEM,
    TASK_STATUSES,
    ApprovalDecided,
    Event,
    MemberChanged,
    MemoryCompacted,
    TaskAssigned,
    TaskCreated,
    TaskStatusChanged,
    ToolFinished,
    decode_payload,
)
from agents.store import Store, Tx, queries
from agents.store import database as database_mod
from agents.store.reducers import (
    add_member,
    add_rule,
    assign_task,
    cancel_approval,
    claim_instance,
    compact_memory,
    create_channel,
    create_task,
    decide_approval,
    delete_memory,
    delete_message,
    expire_approvals,
    finish_tool_call,
    fire_schedule,
    heartbeat,
    instance_heartbeat,
    interrupt_running_tool_calls,
    post_message,
    record_usage,
    release_instance,
    remove_member,
    remove_rule,
    request_approval,
    save_cursor,
    save_cursors,
    send_direct,
    set_agent_status,
    set_schedule,
    set_task_status,
    start_tool_call,
    stop_runaway_tree,
    update_task,
    write_memory,
)
from agents.store.reducers.tasks import (
    MAX_BODY,
    MAX_DELEGATIONS,
    MAX_LIVE_SUBTASKS,
    MAX_TITLE,
    TRANSITIONS,
)
from agents.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import AGENTS

# --- helpers ---------------------------------------------------------------------------


def head(store: Store) -> int:
    return store.read(queries.last_event_id)


def events_after(store: Store, after: int) -> list[Event]:
    return store.read(queries.events_after, after, 10_000)


def table_dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    names = [
        r[0] for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'memory_fts%' "
            "AND name != 'sqlite_sequence' ORDER BY name"
        )
    ]
    return {n: [tuple(r) for r in store.conn.execute(f"SELECT * FROM {n} ORDER BY rowid")] for n in names}


def refused(store: Store, error: type[ReducerError], reducer: Callable[..., Any], *args: Any,
            **kwargs: Any) -> ReducerError:
    """The call raises `error`, and the database is exactly as before: no rows, no events."""
    before = table_dump(store)
    with pytest.raises(error) as info:
        store.write(reducer, *args, **kwargs)
    assert table_dump(store) == before
    assert str(info.value) and "\n" not in str(info.value)
    return info.value


def file_state(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


# --- schema ----------------------------------------------------------------------------

EXPECTED_TABLES = {
    "events", "tasks", "messages", "channels", "channel_members", "memory", "memory_fts",
    "approvals", "permission_rules", "tool_calls", "agent_status", "schedules",
    "inference_usage", "cursors", "instance",
}


def test_schema_has_every_table_of_the_design(store: Store) -> None:
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert EXPECTED_TABLES <= tables
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_connection_pragmas(store: Store) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO tasks (parent_id, job_id, created_by, title, status, created_at, updated_at) "
            "VALUES (999, 1, 'owner', 't', 'queued', 0, 0)"
        )


def test_default_channels_have_the_person_as_owner_and_agents_as_members(store: Store) -> None:
    rows = store.conn.execute(
        "SELECT c.name, m.member, m.role FROM channel_members m JOIN channels c ON c.id = m.channel_id"
    ).fetchall()
    by_channel: dict[str, dict[str, str]] = {}
    for name, member, role in rows:
        by_channel.setdefault(name, {})[member] = role
    assert set(by_channel) == {"general", "agent-logs"}
    for members in by_channel.values():
        assert members == {OWNER: "owner", **{a: "agent" for a in AGENTS}}


def test_reopening_is_idempotent(db_path: Path) -> None:
    s = Store.open(db_path, AGENTS)
    first = head(s)
    dump = table_dump(s)
    s.close()
    s = Store.open(db_path, AGENTS)
    try:
        assert head(s) == first, "reopening must not append events"
        assert table_dump(s) == dump
    finally:
        s.close()


def test_a_new_agent_in_config_joins_the_default_channels_on_open(db_path: Path) -> None:
    Store.open(db_path, AGENTS[:2]).close()
    s = Store.open(db_path, AGENTS)
    try:
        members = {r[0] for r in s.conn.execute(
            "SELECT member FROM channel_members m JOIN channels c ON c.id = m.channel_id "
            "WHERE c.name = 'general'")}
        assert set(AGENTS) <= members
        joined = [e for e in events_after(s, 0) if isinstance(e.payload, MemberChanged)]
        assert {e.payload.member for e in joined} == set(AGENTS)
        assert all(e.actor == SYSTEM for e in joined)
    finally:
        s.close()


# --- opening ---------------------------------------------------------------------------


def test_missing_file_is_created(home: Path) -> None:
    path = home / "new.db"
    assert not path.exists()
    Store.open(path, AGENTS).close()
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"


def test_missing_directory_is_a_clear_error(home: Path) -> None:
    with pytest.raises(StoreOpenError, match="does not exist"):
        Store.open(home / "nope" / "agentdeck.db", AGENTS)
    assert not (home / "nope").exists()


def test_empty_file_is_a_fresh_database(db_path: Path) -> None:
    db_path.write_bytes(b"")
    s = Store.open(db_path, AGENTS)
    try:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        s.close()


@pytest.mark.parametrize("content", [
    os.urandom(8192),
    b"hello, this is a text file\n" * 100,
    b"SQLite format 3\x00" + os.urandom(8192),  # the right magic, garbage after it
    b"SQLite",  # a truncated header
])
def test_non_database_file_is_refused_and_left_untouched(db_path: Path, content: bytes) -> None:
    db_path.write_bytes(content)
    os.utime(db_path, ns=(1_000_000_000, 1_000_000_000))
    before = file_state(db_path)
    with pytest.raises(StoreOpenError) as info:
        Store.open(db_path, AGENTS)
    assert str(db_path) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2
    assert file_state(db_path) == before


def test_directory_is_refused(home: Path) -> None:
    path = home / "adir.db"
    path.mkdir()
    with pytest.raises(StoreOpenError, match="not a regular file"):
        Store.open(path, AGENTS)
    assert path.is_dir() and os.listdir(path) == []


def _make_db(path: Path, user_version: int, *statements: str, wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    for sql in statements:
        conn.execute(sql)
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_newer_schema_is_refused_and_left_untouched(db_path: Path, wal: bool) -> None:
    _make_db(db_path, SCHEMA_VERSION + 1, "CREATE TABLE events (id INTEGER PRIMARY KEY)", wal=wal)
    os.utime(db_path, ns=(1_000_000_000, 1_000_000_000))
    before = file_state(db_path)
    with pytest.raises(StoreOpenError) as info:
        Store.open(db_path, AGENTS)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade agentdeck" in message
    assert file_state(db_path) == before


def test_another_programs_sqlite_database_is_refused_and_left_untouched(db_path: Path) -> None:
    # A valid SQLite file that is not ours (user_version 0, tables of its own) must not be
    # migrated into: that would add our tables to someone else's database.
    _make_db(db_path, 0, "CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)",
             "INSERT INTO photos (path) VALUES ('/a.jpg')")
    os.utime(db_path, ns=(1_000_000_000, 1_000_000_000))
    before = file_state(db_path)
    with pytest.raises(StoreOpenError, match="not an agentdeck database"):
        Store.open(db_path, AGENTS)
    assert file_state(db_path) == before


def _open_outcome(path: Path) -> str:
    try:
        Store.open(path, AGENTS).close()
    except StoreOpenError as err:
        return f"refused: {err}"
    return "opened"


def test_unreadable_file_is_refused(tmp_path: Path, unprivileged_tmp: Path) -> None:
    # Root reads any file, so as root the opening runs as a user who is not (a forked child
    # that drops to `nobody`); as any other user, here. Same code, same checks.
    Store.open(tmp_path / "warm.db", AGENTS).close()  # all that opening imports is loaded before a fork
    db_path = unprivileged_tmp / "agentdeck.db"
    assert as_unprivileged(lambda: _open_outcome(db_path)) == "opened"  # that user makes it and opens it
    db_path.chmod(0o000)
    try:
        outcome = as_unprivileged(lambda: _open_outcome(db_path))
        assert outcome.startswith("refused: ") and "not readable" in outcome, outcome
    finally:
        db_path.chmod(0o600)


def test_open_with_create_false_refuses_a_missing_file(db_path: Path) -> None:
    with pytest.raises(StoreOpenError, match="does not exist"):
        database_mod.open_database(db_path, create=False)
    assert not db_path.exists()


def test_reading_an_event_of_a_newer_protocol_is_a_clear_error(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    store.write(create_task, OWNER, "ok")
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION + 1, {"type": "task.teleported"}])
    store.conn.execute(
        "INSERT INTO events (ts, kind, actor, subject, payload) VALUES (0, 'task.teleported', ?, '', ?)",
        (SYSTEM, blob))
    bad = head(store)
    store.write(create_task, OWNER, "after it")
    # Decoding it is a clear error ...
    row = store.conn.execute("SELECT payload FROM events WHERE id = ?", (bad,)).fetchone()
    with pytest.raises(ProtocolError) as info:
        decode_payload(row[0], bad)
    assert f"event {bad}" in str(info.value) and "upgrade agentdeck" in str(info.value)
    # ... and reading the log leaves it out with a warning, hiding nothing around it.
    with caplog.at_level(logging.WARNING):
        events = events_after(store, 0)
    assert bad not in [e.id for e in events]
    assert [e.payload.task.title for e in events if e.kind == "task.created"] == ["ok", "after it"]
    assert f"event {bad}" in caplog.text and "upgrade agentdeck" in caplog.text


# --- migrations ------------------------------------------------------------------------


def test_v7_adds_memory_vectors_to_a_v6_database_and_they_go_with_their_memory(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.store.reducers.memory import write_memory_vectors

    monkeypatch.setattr(database_mod, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 6])
    monkeypatch.setattr(database_mod, "SCHEMA_VERSION", 6)
    with Store.open(db_path, AGENTS) as old:  # a database as the last release left it
        kept = old.write(write_memory, "dev", "the build uses ninja")
        gone = old.write(write_memory, "dev", "the build used make")
        assert "memory_vectors" not in {r[0] for r in old.conn.execute("SELECT name FROM sqlite_master")}
    monkeypatch.undo()
    with Store.open(db_path, AGENTS) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
        assert s.write(write_memory_vectors, SYSTEM, "m", [(kept.id, b"\0" * 1536), (gone.id, b"\1" * 1536),
                                                          (999, b"\0" * 1536)]) == 2  # 999: no such memory
        with pytest.raises(sqlite3.IntegrityError):  # 384 float32, nothing else
            s.write(write_memory_vectors, SYSTEM, "m", [(kept.id, b"\0" * 12)])
        s.write(delete_memory, "dev", gone.id)
        assert [r[0] for r in s.conn.execute("SELECT memory_id FROM memory_vectors")] == [kept.id]
        assert s.read(queries.memories_without_vectors, "m") == []
        assert [m.id for m in s.read(queries.memories_without_vectors, "another model")] == [kept.id]


def test_forward_migration_is_applied_on_open(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(db_path, AGENTS).close()
    v2 = SCHEMA_VERSION + 1
    monkeypatch.setattr(database_mod, "MIGRATIONS",
                        [*MIGRATIONS, (v2, "ALTER TABLE tasks ADD COLUMN labels TEXT NOT NULL DEFAULT '';")])
    monkeypatch.setattr(database_mod, "SCHEMA_VERSION", v2)
    s = Store.open(db_path, AGENTS)
    try:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == v2
        cols = {r[1] for r in s.conn.execute("PRAGMA table_info(tasks)")}
        assert "labels" in cols
        # Existing rows survive; reducers still work on the migrated schema.
        assert s.write(create_task, OWNER, "after migration").id >= 1
    finally:
        s.close()


def test_failed_migration_leaves_the_previous_version_intact(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store.open(db_path, AGENTS)
    s.write(create_task, OWNER, "keep me")
    s.close()
    v2 = SCHEMA_VERSION + 1
    broken = "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(database_mod, "MIGRATIONS", [*MIGRATIONS, (v2, broken)])
    monkeypatch.setattr(database_mod, "SCHEMA_VERSION", v2)
    with pytest.raises(StoreOpenError):
        Store.open(db_path, AGENTS)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None
        assert conn.execute("SELECT title FROM tasks").fetchall() == [("keep me",)]
    finally:
        conn.close()


def test_two_openers_racing_on_a_fresh_file_both_succeed(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI and an instance may open a new home at the same moment. Simulate the other
    process migrating between our version read and our migration: ours must notice the
    database is already current instead of failing with "table events already exists"."""
    real = database_mod._migrate
    raced = threading.Event()

    def racing_migrate(conn: sqlite3.Connection, current: int) -> None:
        if not raced.is_set():
            raced.set()
            other = database_mod.open_database(db_path)  # the other process wins the race
            other.close()
        real(conn, current)

    monkeypatch.setattr(database_mod, "_migrate", racing_migrate)
    s = Store.open(db_path, AGENTS)
    try:
        assert raced.is_set()
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.conn.execute("SELECT COUNT(*) FROM channels WHERE name = 'general'").fetchone()[0] == 1
    finally:
        s.close()


# --- the write path --------------------------------------------------------------------


def test_a_reducer_that_fails_after_writing_leaves_nothing(store: Store) -> None:
    def half_then_fail(tx: Tx, actor: str) -> None:
        create_task(tx, actor, "written then rolled back")
        raise InvalidArgument("changed my mind")

    refused(store, InvalidArgument, half_then_fail, OWNER)


def test_an_unexpected_exception_rolls_back_too(store: Store) -> None:
    before = table_dump(store)

    def boom(tx: Tx) -> None:
        create_task(tx, OWNER, "x")
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        store.write(boom)
    assert table_dump(store) == before
    assert not store.conn.in_transaction
    store.write(create_task, OWNER, "the store still works")


def test_on_commit_gets_the_last_event_id_only_when_events_were_appended(store: Store) -> None:
    seen: list[int] = []
    store.on_commit = lambda events: seen.append(events[-1].id)
    t = store.write(create_task, OWNER, "a")
    assert seen == [head(store)]
    store.write(save_cursor, SYSTEM, "x", 1)  # bookkeeping: no event, no wake-up
    with pytest.raises(NotFound):
        store.write(set_task_status, OWNER, 999, "active")
    assert seen == [head(store)]
    store.write(set_task_status, OWNER, t.id, "active")
    assert len(seen) == 2 and seen[-1] == head(store)


def test_unknown_actor_is_refused_everywhere(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    for reducer, args in [
        (create_task, ("x",)),
        (set_task_status, (t.id, "active")),
        (write_memory, ("m",)),
        (post_message, ("general", "hi")),
        (save_cursor, ("c", 1)),
    ]:
        refused(store, InvalidArgument, reducer, "mallory", *args)


# --- tasks -----------------------------------------------------------------------------


def test_create_task_writes_row_and_event(store: Store) -> None:
    before = head(store)
    t = store.write(create_task, OWNER, "  build it  ", body="details", owner="dev", priority=3)
    assert (t.title, t.owner, t.created_by, t.status, t.priority, t.job_id) == (
        "build it", "dev", OWNER, "queued", 3, t.id)
    [ev] = events_after(store, before)
    assert ev.kind == "task.created" and ev.subject == f"task:{t.id}"
    assert ev.actor == OWNER and ev.recipient == "dev"
    assert isinstance(ev.payload, TaskCreated) and ev.payload.task == t
    assert store.read(queries.task, t.id) == t


def test_subtasks_share_the_job_of_their_root(store: Store) -> None:
    root = store.write(create_task, OWNER, "root", owner="lead")
    child = store.write(create_task, "lead", "child", owner="dev", parent_id=root.id)
    grandchild = store.write(create_task, "dev", "grandchild", parent_id=child.id)
    assert child.parent_id == root.id and grandchild.parent_id == child.id
    assert root.job_id == child.job_id == grandchild.job_id == root.id


def test_an_agent_delegates_only_from_its_own_task(store: Store) -> None:
    root = store.write(create_task, OWNER, "root", owner="lead")
    refused(store, PermissionDenied, create_task, "dev", "sneaky", parent_id=root.id)
    refused(store, NotFound, create_task, "lead", "orphan", parent_id=999)


@pytest.mark.parametrize("kwargs, error", [
    ({"title": ""}, InvalidArgument),
    ({"title": "   "}, InvalidArgument),
    ({"title": "x" * 501}, InvalidArgument),
    ({"title": "t", "priority": -1}, InvalidArgument),
    ({"title": "t", "priority": 10}, InvalidArgument),
    ({"title": "t", "owner": "nobody"}, InvalidArgument),
    ({"title": "t", "owner": OWNER}, InvalidArgument),
])
def test_create_task_validates(store: Store, kwargs: dict[str, Any], error: type[ReducerError]) -> None:
    title = kwargs.pop("title")
    refused(store, error, create_task, OWNER, title, **kwargs)


def test_agents_change_only_their_own_tasks(store: Store) -> None:
    mine = store.write(create_task, OWNER, "dev's", owner="dev")
    unassigned = store.write(create_task, OWNER, "nobody's")
    refused(store, PermissionDenied, set_task_status, "review", mine.id, "active")
    refused(store, PermissionDenied, update_task, "review", mine.id, priority=5)
    refused(store, PermissionDenied, assign_task, "review", mine.id, "review")
    refused(store, PermissionDenied, set_task_status, "dev", unassigned.id, "active")
    # the owner agent, the person and agentdeck itself may
    assert store.write(set_task_status, "dev", mine.id, "active").status == "active"
    assert store.write(update_task, OWNER, mine.id, priority=5).priority == 5
    assert store.write(set_task_status, SYSTEM, mine.id, "blocked").status == "blocked"


def test_an_agent_claims_an_unassigned_task_but_not_for_someone_else(store: Store) -> None:
    t = store.write(create_task, OWNER, "up for grabs")
    refused(store, PermissionDenied, assign_task, "dev", t.id, "review")
    before = head(store)
    claimed = store.write(assign_task, "dev", t.id, "dev")
    assert claimed.owner == "dev"
    [ev] = events_after(store, before)
    assert ev.payload == TaskAssigned(task_id=t.id, owner="dev", previous=None)
    # and hands it on
    assert store.write(assign_task, "dev", t.id, "review").owner == "review"
    refused(store, PermissionDenied, assign_task, "dev", t.id, "dev")


def test_assigning_to_the_current_owner_is_a_no_op_without_event(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    before = head(store)
    assert store.write(assign_task, OWNER, t.id, "dev").owner == "dev"
    assert head(store) == before


def test_every_status_transition_follows_the_table(store: Store) -> None:
    """Build a task in each status by a path the table allows, then try every move."""
    paths = {
        "queued": [], "active": ["active"], "waiting_approval": ["active", "waiting_approval"],
        "blocked": ["blocked"], "deferred": ["deferred"], "failed": ["failed"],
        "done": ["active", "done"], "cancelled": ["cancelled"],
    }
    assert set(paths) == set(TASK_STATUSES)
    for start, path in paths.items():
        for target in TASK_STATUSES:
            t = store.write(create_task, OWNER, f"{start}->{target}", owner="dev")
            for step in path:
                store.write(set_task_status, "dev", t.id, step)
            if target in TRANSITIONS[start]:
                before = head(store)
                out = store.write(set_task_status, "dev", t.id, target, result="r")
                assert out.status == target
                [ev] = events_after(store, before)
                assert ev.payload == TaskStatusChanged(task_id=t.id, old=start, new=target, result="r")
            else:
                refused(store, InvalidTransition, set_task_status, "dev", t.id, target)


def test_done_never_goes_back_and_cannot_be_reassigned_or_changed(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    store.write(set_task_status, "dev", t.id, "active")
    store.write(set_task_status, "dev", t.id, "done", result="shipped")
    for actor in (OWNER, SYSTEM, "dev"):
        refused(store, InvalidTransition, set_task_status, actor, t.id, "queued")
    refused(store, InvalidTransition, assign_task, OWNER, t.id, "review")
    refused(store, InvalidTransition, update_task, OWNER, t.id, priority=2)
    assert store.read(queries.task, t.id).result == "shipped"  # type: ignore[union-attr]


def test_attempts_count_activations_and_result_is_kept(store: Store) -> None:
    t = store.write(create_task, OWNER, "flaky", owner="dev")
    store.write(set_task_status, "dev", t.id, "active")
    store.write(set_task_status, "dev", t.id, "failed", result="boom")
    store.write(set_task_status, "dev", t.id, "queued")
    out = store.write(set_task_status, "dev", t.id, "active")
    assert out.attempts == 2
    assert out.result == "boom"


def test_unknown_status_and_missing_task(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    refused(store, InvalidArgument, set_task_status, "dev", t.id, "teleported")
    refused(store, NotFound, set_task_status, OWNER, 12345, "active")
    refused(store, NotFound, assign_task, OWNER, 12345, "dev")
    refused(store, InvalidArgument, update_task, OWNER, t.id)
    refused(store, InvalidArgument, update_task, OWNER, t.id, priority=42)


def test_status_change_notifies_the_other_party(store: Store) -> None:
    t = store.write(create_task, "lead", "for dev", owner="dev")
    before = head(store)
    store.write(set_task_status, "dev", t.id, "active")  # dev acts: lead (creator) hears
    store.write(set_task_status, OWNER, t.id, "blocked")  # the person acts: dev (owner) hears
    first, second = events_after(store, before)
    assert first.recipient == "lead"
    assert second.recipient == "dev"


# --- tool calls ------------------------------------------------------------------------


def test_tool_call_lifecycle(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    before = head(store)
    call = store.write(start_tool_call, "dev", "read_file", {"path": "a.py"}, task_id=t.id)
    assert call.status == "running" and call.arguments == {"path": "a.py"}
    done = store.write(finish_tool_call, "dev", call.id, "ok", "contents")
    assert (done.status, done.result) == ("ok", "contents") and done.finished_at is not None
    started, finished = events_after(store, before)
    assert started.kind == "tool.started" and started.subject == f"tool_call:{call.id}"
    assert finished.payload == ToolFinished(call_id=call.id, status="ok", result="contents")
    refused(store, InvalidTransition, finish_tool_call, "dev", call.id, "error")


def test_tool_calls_belong_to_agents(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    refused(store, PermissionDenied, start_tool_call, OWNER, "shell", {})
    refused(store, PermissionDenied, start_tool_call, SYSTEM, "shell", {})
    refused(store, PermissionDenied, start_tool_call, "review", "shell", {}, task_id=t.id)
    call = store.write(start_tool_call, "dev", "shell", {"cmd": "ls"})
    refused(store, PermissionDenied, finish_tool_call, "review", call.id, "ok")
    refused(store, InvalidArgument, finish_tool_call, "dev", call.id, "running")
    refused(store, InvalidArgument, finish_tool_call, "dev", call.id, "interrupted")
    assert store.write(finish_tool_call, OWNER, call.id, "denied").status == "denied"


def test_interrupt_running_tool_calls_marks_and_reports_each(store: Store) -> None:
    a = store.write(start_tool_call, "dev", "shell", {"cmd": "make"})
    b = store.write(start_tool_call, "ops", "health", {})
    c = store.write(start_tool_call, "dev", "read_file", {"path": "x"})
    store.write(finish_tool_call, "dev", c.id, "ok", "x")
    refused(store, PermissionDenied, interrupt_running_tool_calls, "dev")
    before = head(store)
    interrupted = store.write(interrupt_running_tool_calls, SYSTEM)
    assert [x.id for x in interrupted] == [a.id, b.id]
    calls = {x.id: x for x in store.read(queries.tool_calls)}
    assert calls[a.id].status == calls[b.id].status == "interrupted"
    assert calls[c.id].status == "ok"
    evs = events_after(store, before)
    assert [(e.kind, e.subject, e.recipient) for e in evs] == [
        ("tool.finished", f"tool_call:{a.id}", "dev"), ("tool.finished", f"tool_call:{b.id}", "ops")]
    assert all(isinstance(e.payload, ToolFinished) and e.payload.status == "interrupted" for e in evs)
    # never run again: a second recovery finds nothing, and the calls cannot be finished now
    assert store.write(interrupt_running_tool_calls, SYSTEM) == []
    refused(store, InvalidTransition, finish_tool_call, "dev", a.id, "ok")


# --- memory ----------------------------------------------------------------------------


def test_memory_search_sees_own_and_shared_entries(store: Store) -> None:
    store.write(write_memory, "dev", "the build uses ninja generator", tags=["Build", "ninja"])
    store.write(write_memory, "ops", "disk ninja alert was noise", scope="shared")
    store.write(write_memory, "review", "ninja secrets of review", scope="private")
    found = store.read(queries.search_memory, "ninja", agent="dev")
    assert {m.agent for m in found} == {"dev", "ops"}
    assert {m.agent for m in store.read(queries.search_memory, "ninja")} == {"dev", "ops", "review"}
    dev_entry = next(m for m in found if m.agent == "dev")
    assert dev_entry.tags == ["build", "ninja"]
    assert store.read(queries.search_memory, "") == []
    assert store.read(queries.search_memory, 'ninja" OR "x') != []  # quotes cannot break the query


def test_memory_ownership(store: Store) -> None:
    m = store.write(write_memory, "dev", "dev's note")
    refused(store, PermissionDenied, write_memory, "review", "for dev", agent="dev")
    refused(store, PermissionDenied, delete_memory, "review", m.id)
    refused(store, PermissionDenied, compact_memory, "review", [m.id], "summary")
    assert store.write(write_memory, OWNER, "for dev", agent="dev").agent == "dev"
    refused(store, InvalidArgument, write_memory, OWNER, "for nobody")  # the person has no memory
    refused(store, InvalidArgument, write_memory, OWNER, "x", agent="nobody")


@pytest.mark.parametrize("kwargs", [
    {"content": ""}, {"content": "x", "importance": 0}, {"content": "x", "importance": 6},
    {"content": "x", "kind": "dream"}, {"content": "x", "scope": "public"},
    {"content": "x", "tags": ["two words"]}, {"content": "x", "task_id": 999},
])
def test_memory_validation(store: Store, kwargs: dict[str, Any]) -> None:
    content = kwargs.pop("content")
    refused(store, ReducerError, write_memory, "dev", content, **kwargs)


def test_compaction_keeps_originals_and_hides_them_from_search(store: Store) -> None:
    a = store.write(write_memory, "scribe", "reflection about tea", kind="reflection")
    b = store.write(write_memory, "scribe", "reflection about coffee", kind="reflection", scope="shared")
    before = head(store)
    summary = store.write(compact_memory, "scribe", [a.id, b.id, a.id], "drinks summary tea coffee")
    assert summary.kind == "summary" and summary.scope == "shared"
    written, compacted = events_after(store, before)
    assert written.kind == "memory.written" and written.subject == f"memory:{summary.id}"
    assert compacted.payload == MemoryCompacted(summary_id=summary.id, compacted=[a.id, b.id])
    hits = store.read(queries.search_memory, "tea", agent="scribe")
    assert [m.id for m in hits] == [summary.id]
    everything = store.read(queries.search_memory, "tea", agent="scribe", include_compacted=True)
    assert {m.id for m in everything} == {a.id, summary.id}
    refused(store, InvalidTransition, compact_memory, "scribe", [a.id], "again")
    other = store.write(write_memory, "dev", "dev note")
    refused(store, InvalidArgument, compact_memory, OWNER, [summary.id, other.id], "mixed")
    refused(store, InvalidArgument, compact_memory, "scribe", [], "nothing")


def test_deleting_memory_removes_it_from_the_index(store: Store) -> None:
    m = store.write(write_memory, "dev", "unique zebra fact")
    assert store.read(queries.search_memory, "zebra")
    before = head(store)
    store.write(delete_memory, "dev", m.id)
    assert store.read(queries.search_memory, "zebra") == []
    [ev] = events_after(store, before)
    assert ev.kind == "memory.deleted" and ev.subject == f"memory:{m.id}"
    refused(store, NotFound, delete_memory, "dev", m.id)
    assert store.conn.execute("INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')")


def test_deleting_a_summary_releases_its_originals(store: Store) -> None:
    a = store.write(write_memory, "scribe", "old walrus reflection", kind="reflection")
    summary = store.write(compact_memory, "scribe", [a.id], "walrus summary")
    store.write(delete_memory, "scribe", summary.id)
    assert [m.id for m in store.read(queries.search_memory, "walrus")] == [a.id]


# --- agent status, usage, cursors, instance --------------------------------------------


def test_agent_status_is_changed_by_that_agent_or_the_person(store: Store) -> None:
    before = head(store)
    s = store.write(set_agent_status, "dev", "dev", "acting", detail="building")
    assert (s.state, s.detail) == ("acting", "building")
    [ev] = events_after(store, before)
    assert ev.kind == "agent.status" and ev.subject == "agent:dev"
    refused(store, PermissionDenied, set_agent_status, "review", "dev", "crashed")
    refused(store, InvalidArgument, set_agent_status, "dev", "dev", "dancing")
    refused(store, InvalidArgument, set_agent_status, OWNER, "nobody", "idle")
    refused(store, NotFound, set_agent_status, "dev", "dev", "acting", task_id=999)
    assert store.write(set_agent_status, SYSTEM, "dev", "crashed").state == "crashed"


def test_heartbeat_touches_liveness_only_and_appends_no_event(store: Store) -> None:
    refused(store, InvalidArgument, heartbeat, "dev", "dev")  # no status yet
    store.write(set_agent_status, "dev", "dev", "idle")
    store.conn.execute("UPDATE agent_status SET heartbeat_at = 1 WHERE agent = 'dev'")
    before = head(store)
    store.write(heartbeat, "dev", "dev")
    assert head(store) == before
    assert store.read(queries.agent_statuses)["dev"].heartbeat_at > 1  # type: ignore[operator]
    refused(store, PermissionDenied, heartbeat, "ops", "dev")


def test_usage_is_recorded_for_oneself(store: Store) -> None:
    t = store.write(create_task, OWNER, "t", owner="dev")
    args = dict(agent="dev", prompt_tokens=10, cached_tokens=2, completion_tokens=5, queue_s=0.1,
                decode_s=0.2)
    u = store.write(record_usage, "dev", task_id=t.id, **args)
    assert u.prompt_tokens == 10 and u.task_id == t.id
    refused(store, PermissionDenied, record_usage, "ops", **args)
    refused(store, InvalidArgument, record_usage, "dev", **{**args, "prompt_tokens": -1})


def test_usage_for_a_missing_task_is_a_typed_error(store: Store) -> None:
    # Before the fix this leaked sqlite3.IntegrityError (foreign key) out of the reducer.
    refused(store, NotFound, record_usage, "dev", agent="dev", prompt_tokens=1, cached_tokens=0,
            completion_tokens=1, queue_s=0, decode_s=0, task_id=999)


def test_cursors_only_move_forward_and_append_no_event(store: Store) -> None:
    before = head(store)
    assert store.write(save_cursor, SYSTEM, "agent:dev", 10) == 10
    assert store.write(save_cursor, SYSTEM, "agent:dev", 4) == 10
    store.write(save_cursors, SYSTEM, {"agent:dev": 12, "tui": 3})
    assert store.read(queries.cursor, "agent:dev") == 12
    assert store.read(queries.cursor, "tui") == 3
    assert store.read(queries.cursor, "nope") is None
    assert head(store) == before
    refused(store, InvalidArgument, save_cursor, SYSTEM, "", 1)


def test_instance_row_is_claimed_by_one_live_process(store: Store) -> None:
    before = head(store)
    store.write(claim_instance, SYSTEM, 100)
    refused(store, InvalidArgument, claim_instance, SYSTEM, 200)
    refused(store, PermissionDenied, claim_instance, "dev", 100)
    store.write(instance_heartbeat, SYSTEM, 100, b"meter")
    row = store.read(queries.instance)
    assert row is not None and row["pid"] == 100 and row["meter"] == b"meter"
    store.write(release_instance, SYSTEM, 200)  # not the holder: nothing happens
    assert store.read(queries.instance) is not None
    store.write(release_instance, SYSTEM, 100)
    assert store.read(queries.instance) is None
    store.write(claim_instance, SYSTEM, 200)
    # a stale holder is replaced
    store.conn.execute("UPDATE instance SET heartbeat_at = 0")
    store.write(claim_instance, SYSTEM, 300)
    assert store.read(queries.instance)["pid"] == 300  # type: ignore[index]
    assert head(store) == before


# --- channels and messages -------------------------------------------------------------


def role(store: Store, channel: str, member: str) -> str | None:
    row = store.conn.execute(
        "SELECT m.role FROM channel_members m JOIN channels c ON c.id = m.channel_id "
        "WHERE c.name = ? AND m.member = ?", (channel, member)).fetchone()
    return row[0] if row else None


def test_an_agent_creating_a_channel_runs_it_under_the_person(store: Store) -> None:
    before = head(store)
    ch = store.write(create_channel, "lead", "#planning", topic="plans")
    assert ch.name == "planning" and ch.created_by == "lead"
    assert role(store, "planning", OWNER) == "owner"
    assert role(store, "planning", "lead") == "admin"
    [ev] = events_after(store, before)
    assert ev.kind == "channel.created" and ev.subject == f"channel:{ch.id}"
    refused(store, InvalidArgument, create_channel, "dev", "planning")
    refused(store, InvalidArgument, create_channel, "dev", "bad name!")
    refused(store, InvalidArgument, create_channel, "dev", "")
    owner_made = store.write(create_channel, OWNER, "ops-room")
    assert role(store, "ops-room", OWNER) == "owner"
    assert store.conn.execute(
        "SELECT COUNT(*) FROM channel_members WHERE channel_id = ?", (owner_made.id,)).fetchone()[0] == 1


def _room(store: Store) -> None:
    """#room: lead admin, review moderator, ops member, dev and scribe agents."""
    store.write(create_channel, "lead", "room")
    store.write(add_member, OWNER, "room", "review", "moderator")
    store.write(add_member, OWNER, "room", "ops", "member")
    store.write(add_member, OWNER, "room", "dev", "agent")
    store.write(add_member, OWNER, "room", "scribe", "agent")


@pytest.mark.parametrize("actor, member, new_role, allowed", [
    ("lead", "dev", "moderator", True),      # admin grants below admin
    ("lead", "dev", "admin", False),         # ...but not its own rank
    ("lead", "review", "member", True),      # admin demotes a moderator
    ("review", "dev", "member", True),       # moderator promotes an agent to member
    ("review", "dev", "moderator", False),   # ...not to its own rank
    ("review", "ops", "agent", True),        # moderator demotes a member
    ("review", "lead", "agent", False),      # cannot touch a higher rank
    ("ops", "dev", "member", False),         # member is below moderator: no management
    ("dev", "scribe", "member", False),      # agent role: no management
    ("review", "review", "admin", False),    # no self-promotion
    ("dev", "dev", "member", False),
    (OWNER, "dev", "admin", True),           # the person does anything
    (SYSTEM, "lead", "agent", True),
])
def test_channel_role_changes_follow_the_ranks(
    store: Store, actor: str, member: str, new_role: str, allowed: bool
) -> None:
    _room(store)
    if allowed:
        before = head(store)
        store.write(add_member, actor, "room", member, new_role)
        assert role(store, "room", member) == new_role
        [ev] = events_after(store, before)
        assert ev.payload.member == member and ev.payload.role == new_role  # type: ignore[union-attr]
        assert ev.recipient == member
    else:
        refused(store, PermissionDenied, add_member, actor, "room", member, new_role)


@pytest.mark.parametrize("actor, member, allowed", [
    ("dev", "dev", True),         # anyone may leave
    ("lead", "lead", True),
    ("lead", "review", True),     # admin removes a moderator
    ("review", "ops", True),      # moderator removes a member
    ("review", "dev", True),
    ("review", "lead", False),    # not a higher rank
    ("ops", "dev", False),        # members do not remove others
    ("dev", "scribe", False),
    ("bystander", "dev", False),  # not a member at all (lead is not in #general roles here)
    (OWNER, "lead", True),
])
def test_channel_removals_follow_the_ranks(store: Store, actor: str, member: str, allowed: bool) -> None:
    _room(store)
    if actor == "bystander":
        store.write(remove_member, "scribe", "room", "scribe")
        actor = "scribe"
    if allowed:
        store.write(remove_member, actor, "room", member)
        assert role(store, "room", member) is None
    else:
        refused(store, PermissionDenied, remove_member, actor, "room", member)


def test_the_person_cannot_be_removed_or_demoted(store: Store) -> None:
    _room(store)
    refused(store, PermissionDenied, remove_member, "lead", "room", OWNER)
    refused(store, PermissionDenied, remove_member, OWNER, "room", OWNER)
    refused(store, InvalidArgument, add_member, OWNER, "room", OWNER, "agent")
    refused(store, NotFound, remove_member, OWNER, "room", "nobody")
    refused(store, NotFound, add_member, OWNER, "no-such-room", "dev")
    refused(store, InvalidArgument, add_member, OWNER, "room", "dev", "king")


def test_only_members_post_and_messages_have_events(store: Store) -> None:
    _room(store)
    before = head(store)
    msg = store.write(post_message, "dev", "#room", "hello")
    [ev] = events_after(store, before)
    assert ev.kind == "message.posted" and ev.subject == f"channel:{msg.channel_id}"
    store.write(remove_member, "dev", "room", "dev")
    refused(store, PermissionDenied, post_message, "dev", "room", "still here?")
    refused(store, InvalidArgument, post_message, OWNER, "room", "   ")
    refused(store, InvalidArgument, post_message, OWNER, "room", "x" * 20_001)
    refused(store, NotFound, post_message, OWNER, "room", "hi", task_id=999)
    assert [m.body for m in store.read(queries.messages, "room")] == ["hello"]


@pytest.mark.parametrize("actor, sender, allowed", [
    ("dev", "dev", True),        # own message
    ("review", "dev", True),     # moderator over agent
    ("review", "ops", True),     # moderator over member
    ("review", "lead", False),   # not over admin
    ("ops", "dev", False),       # member cannot moderate
    ("scribe", "dev", False),
    ("lead", "review", True),    # admin over moderator
    ("lead", OWNER, False),      # nobody deletes the person's message but the person
    (OWNER, "lead", True),
])
def test_message_deletion_follows_the_ranks(store: Store, actor: str, sender: str, allowed: bool) -> None:
    _room(store)
    msg = store.write(post_message, sender, "room", f"from {sender}")
    if allowed:
        before = head(store)
        store.write(delete_message, actor, msg.id)
        assert store.read(queries.messages, "room") == []
        [ev] = events_after(store, before)
        assert ev.kind == "message.deleted" and ev.subject == f"channel:{msg.channel_id}"
        refused(store, NotFound, delete_message, actor, msg.id)
    else:
        refused(store, PermissionDenied, delete_message, actor, msg.id)


def test_direct_messages(store: Store) -> None:
    before = head(store)
    dm = store.write(send_direct, "lead", "dev", "please look at #3")
    assert dm.channel_id is None and dm.recipient == "dev"
    [ev] = events_after(store, before)
    assert (ev.subject, ev.recipient) == ("dm:dev", "dev")
    refused(store, InvalidArgument, send_direct, "dev", "dev", "self")
    refused(store, InvalidArgument, send_direct, "dev", "nobody", "x")
    refused(store, PermissionDenied, delete_message, "dev", dm.id)  # the recipient cannot
    store.write(delete_message, "lead", dm.id)
    assert store.write(send_direct, "dev", OWNER, "done").recipient == OWNER


# --- approvals and rules ---------------------------------------------------------------


def _ask(store: Store, agent: str = "dev", timeout_s: float = 600, **kw: Any) -> Any:
    return store.write(request_approval, agent, "shell", {"cmd": "rm -rf build"}, "rm -rf /w/build",
                       "cleans the build", timeout_s=timeout_s, **kw)


def test_approval_flow_once(store: Store) -> None:
    before = head(store)
    a = _ask(store)
    assert a.status == "pending" and a.expires_at == pytest.approx(a.created_at + 600)
    decided = store.write(decide_approval, OWNER, a.id, True)
    assert (decided.status, decided.decided_by, decided.scope) == ("approved", "user", "once")
    requested, dec = events_after(store, before)
    assert requested.kind == "approval.requested" and requested.subject == f"approval:{a.id}"
    assert dec.recipient == "dev"
    assert dec.payload == ApprovalDecided(approval_id=a.id, status="approved", decided_by="user",
                                          scope="once")
    assert store.read(queries.rules) == []
    err = refused(store, InvalidTransition, decide_approval, OWNER, a.id, False)
    assert "already approved" in str(err)


def test_approve_always_saves_an_allow_rule(store: Store) -> None:
    a = _ask(store)
    store.write(decide_approval, OWNER, a.id, True, scope="always")
    [rule] = store.read(queries.rules)
    assert (rule.agent, rule.tool, rule.pattern, rule.decision, rule.source) == (
        "dev", "shell", "rm -rf /w/build", "allow", "approval")
    dec = events_after(store, 0)[-1]
    assert isinstance(dec.payload, ApprovalDecided) and dec.payload.rule_id == rule.id
    assert events_after(store, 0)[-2].kind == "rule.added"


def test_only_the_person_decides_and_only_agents_ask(store: Store) -> None:
    a = _ask(store)
    for agent in AGENTS:
        refused(store, PermissionDenied, decide_approval, agent, a.id, True)
    refused(store, PermissionDenied, request_approval, OWNER, "shell", {}, "x", "y", timeout_s=1)
    refused(store, InvalidArgument, request_approval, "dev", "shell", {}, "x", "y", timeout_s=0)
    t = store.write(create_task, OWNER, "t", owner="ops")
    refused(store, PermissionDenied, request_approval, "dev", "shell", {}, "x", "y", timeout_s=1,
            task_id=t.id)
    call = store.write(start_tool_call, "ops", "shell", {})
    refused(store, PermissionDenied, request_approval, "dev", "shell", {}, "x", "y", timeout_s=1,
            tool_call_id=call.id)
    refused(store, InvalidArgument, decide_approval, OWNER, a.id, True, scope="forever")
    refused(store, NotFound, decide_approval, OWNER, 999, True)


def test_cancel_by_the_asker_or_the_person(store: Store) -> None:
    a = _ask(store)
    refused(store, PermissionDenied, cancel_approval, "ops", a.id)
    assert store.write(cancel_approval, "dev", a.id).status == "cancelled"
    refused(store, InvalidTransition, cancel_approval, "dev", a.id)
    b = _ask(store)
    assert store.write(cancel_approval, OWNER, b.id).status == "cancelled"


def test_expiry_denies_by_timeout(store: Store) -> None:
    due = _ask(store, timeout_s=1e-6)
    later = _ask(store, timeout_s=600)
    refused(store, PermissionDenied, expire_approvals, "dev")
    before = head(store)
    assert store.write(expire_approvals, SYSTEM) == [due.id]
    got = store.read(queries.approval, due.id)
    assert got is not None and (got.status, got.decided_by) == ("expired", "timeout")
    assert store.read(queries.approval, later.id).status == "pending"  # type: ignore[union-attr]
    [ev] = events_after(store, before)
    assert ev.recipient == "dev" and ev.payload.status == "expired"  # type: ignore[union-attr]
    assert store.write(expire_approvals, SYSTEM) == []
    refused(store, InvalidTransition, decide_approval, OWNER, due.id, True)


def test_rules_are_written_by_the_person_only(store: Store) -> None:
    refused(store, PermissionDenied, add_rule, "dev", "dev", "shell", "git *", "allow")
    r = store.write(add_rule, OWNER, "*", "shell", "git status", "allow")
    again = store.write(add_rule, OWNER, "*", "shell", "git status", "deny")
    assert again.id == r.id and again.decision == "deny"
    refused(store, InvalidArgument, add_rule, OWNER, "nobody", "shell", "x", "allow")
    refused(store, InvalidArgument, add_rule, OWNER, "dev", "shell", "x", "maybe")
    refused(store, InvalidArgument, add_rule, OWNER, "dev", "", "x", "allow")
    refused(store, PermissionDenied, remove_rule, "dev", r.id)
    before = head(store)
    store.write(remove_rule, OWNER, r.id)
    assert store.read(queries.rules) == []
    [ev] = events_after(store, before)
    assert ev.kind == "rule.removed" and ev.subject == f"rule:{r.id}"
    refused(store, NotFound, remove_rule, OWNER, r.id)


# --- schedules -------------------------------------------------------------------------


def test_schedules_are_set_by_their_agent_and_fired_by_agentdeck(store: Store) -> None:
    s = store.write(set_schedule, "ops", "ops", "health", 60, body="check the disks")
    assert s.enabled and s.next_run_at > 0
    refused(store, PermissionDenied, set_schedule, "dev", "ops", "health", 30)
    refused(store, InvalidArgument, set_schedule, "ops", "ops", "health", 0)
    refused(store, InvalidArgument, set_schedule, "ops", "ops", "  ", 10)
    refused(store, PermissionDenied, fire_schedule, "ops", s.id)
    refused(store, InvalidTransition, fire_schedule, SYSTEM, s.id)  # not due for a minute
    s = store.write(set_schedule, "ops", "ops", "health", 60, body="check the disks",
                    first_run_at=time.time() - 1)
    before = head(store)
    task_id = store.write(fire_schedule, SYSTEM, s.id)
    task = store.read(queries.task, task_id)
    assert task is not None and task.owner == "ops" and task.body == "check the disks"
    created, fired = events_after(store, before)
    assert created.kind == "task.created" and fired.kind == "schedule.fired"
    assert fired.recipient == "ops" and fired.payload.task_id == task_id  # type: ignore[union-attr]


def test_missed_runs_collapse_into_one(store: Store) -> None:
    s = store.write(set_schedule, OWNER, "ops", "tick", 10, first_run_at=1000.0)
    task_count = len(store.read(queries.tasks))
    store.write(fire_schedule, SYSTEM, s.id)
    [after] = [x for x in store.conn.execute("SELECT next_run_at, last_run_at FROM schedules")]
    now = time.time()
    assert now < after[0] <= now + 10.5
    assert (after[0] - 1000.0) % 10 == pytest.approx(0, abs=1e-6)
    assert len(store.read(queries.tasks)) == task_count + 1
    assert store.read(queries.due_schedules, now) == []


def test_disabled_schedule_does_not_fire(store: Store) -> None:
    s = store.write(set_schedule, OWNER, "ops", "tick", 10, enabled=False, first_run_at=0)
    refused(store, InvalidArgument, fire_schedule, SYSTEM, s.id)
    refused(store, NotFound, fire_schedule, SYSTEM, 999)


def test_recovery_claims_only_calls_whose_process_is_gone(store: Store) -> None:
    import psutil

    parent = psutil.Process(os.getppid())  # alive for the whole test, and not this process
    live, reused, legacy, mine = (store.write(start_tool_call, "dev", "shell", {"i": i}) for i in range(4))
    assert (mine.owner_pid, mine.owner_started) == (os.getpid(), psutil.Process().create_time())
    owners = {live.id: (parent.pid, parent.create_time()),
              reused.id: (parent.pid, parent.create_time() - 60),  # the pid now belongs to another
              legacy.id: (None, None)}  # written before owners were recorded
    for call_id, (pid, started) in owners.items():
        store.conn.execute("UPDATE tool_calls SET owner_pid = ?, owner_started = ? WHERE id = ?",
                           (pid, started, call_id))
    interrupted = store.write(interrupt_running_tool_calls, SYSTEM)
    assert [c.id for c in interrupted] == [reused.id, legacy.id, mine.id]
    assert store.read(queries.tool_calls, status="running")[0].id == live.id


# --- caps on tasks: size, runaway trees, delegation rate ---


def test_a_task_body_and_title_are_capped_on_every_path(store: Store) -> None:
    at_cap = store.write(create_task, OWNER, "a long paste", body="x" * MAX_BODY, owner="dev")
    assert len(at_cap.body) == MAX_BODY
    err = refused(store, InvalidArgument, create_task, OWNER, "a longer paste", body="x" * (MAX_BODY + 1))
    assert str(err) == f"task body longer than {MAX_BODY} characters"
    err = refused(store, InvalidArgument, create_task, OWNER, "t" * (MAX_TITLE + 1))
    assert str(err) == f"title longer than {MAX_TITLE} characters"
    # The delegate tool and triage create subtasks through the same reducer.
    root = store.write(create_task, OWNER, "plan", owner="lead")
    refused(store, InvalidArgument, create_task, "lead", "part", body="y" * (MAX_BODY + 1), owner="dev",
            parent_id=root.id)


def _wide_tree(store: Store, live: int) -> tuple[int, list[int]]:
    """A root for lead and `live` unfinished subtasks under it, made by the person (no rate cap)."""
    root = store.write(create_task, OWNER, "plan", owner="lead")
    parents = [store.write(create_task, OWNER, f"part {i}", owner="dev", parent_id=root.id).id for i in range(8)]
    for i in range(live - len(parents)):
        store.write(create_task, OWNER, f"piece {i}", owner="review", parent_id=parents[i % len(parents)])
    return root.id, parents


def test_a_task_tree_holds_at_most_max_live_subtasks_and_a_runaway_one_is_stopped(store: Store) -> None:
    root, parents = _wide_tree(store, MAX_LIVE_SUBTASKS)
    err = refused(store, TaskTreeTooLarge, create_task, "dev", "one more", owner="ops", parent_id=parents[0])
    assert str(err) == f"task {root}'s tree already has {MAX_LIVE_SUBTASKS} unfinished subtasks; no more"
    # Finished subtasks make room again.
    store.write(set_task_status, "dev", parents[1], "active")
    store.write(set_task_status, "dev", parents[1], "done", "ok")
    extra = store.write(create_task, "dev", "one more", owner="ops", parent_id=parents[0])
    # Only the owner of a task in the tree may ask to stop it, and only at the cap.
    refused(store, PermissionDenied, stop_runaway_tree, "ops", parents[0])
    small = store.write(create_task, OWNER, "small job", owner="lead")
    store.write(create_task, OWNER, "one part", owner="dev", parent_id=small.id)
    err = refused(store, InvalidArgument, stop_runaway_tree, "lead", small.id)
    assert "under the cap" in str(err)
    store.write(set_task_status, "lead", root, "active")
    ended = store.write(stop_runaway_tree, "dev", parents[0])
    tasks = {t.id: t for t in store.read(queries.tasks)}
    assert tasks[root].status == "failed"
    assert tasks[root].result == (f"stopped by agentdeck: runaway delegation (task {root}'s tree reached "
                                  f"{MAX_LIVE_SUBTASKS} unfinished subtasks)")
    tree = [t for t in tasks.values() if t.job_id == root and t.id != root]
    assert {t.status for t in tree if t.id != parents[1]} == {"cancelled"} and extra.id in ended
    assert tasks[parents[1]].status == "done"  # finished work stays as it was
    assert tasks[small.id].status == "queued"  # other trees are untouched
    # A dead tree grows no more.
    err = refused(store, InvalidTransition, create_task, OWNER, "late", owner="dev", parent_id=parents[0])
    assert str(err) == f"task {parents[0]} is cancelled; no new subtasks under it"


def test_an_agent_delegates_at_most_max_delegations_a_minute_even_across_restarts(db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        # Tasks an agent created (ops asked lead): fan-out under them is what the cap is for.
        roots = [store.write(create_task, "ops", f"job {i}", owner="lead").id for i in range(4)]
        for i in range(MAX_DELEGATIONS):
            store.write(create_task, "lead", f"part {i}", owner="dev", parent_id=roots[i % 4])
    with Store.open(db_path, AGENTS) as store:  # counted from the table: a restart resets nothing
        err = refused(store, InvalidArgument, create_task, "lead", "one more", owner="dev", parent_id=roots[0])
        assert str(err) == (f"lead already delegated {MAX_DELEGATIONS} tasks in the last 60 s; "
                            "wait before delegating more")
        store.write(create_task, OWNER, "the person is not limited", owner="dev", parent_id=roots[0])
        store.conn.execute("UPDATE tasks SET created_at = created_at - 61")  # a minute later
        store.write(create_task, "lead", "one more", owner="dev", parent_id=roots[1])


def test_handing_off_the_persons_own_tasks_is_not_rate_capped(db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        # The person sends 40 tasks to lead within the minute and lead's triage hands each on.
        roots = [store.write(create_task, OWNER, f"job {i}", owner="lead").id for i in range(40)]
        handed = [store.write(create_task, "lead", f"job {i} for dev", owner="dev", parent_id=root).id
                  for i, root in enumerate(roots)]
        assert len(handed) == 40 > MAX_DELEGATIONS
        # What lead's hand-offs created is agents' work: delegating under it is still capped.
        for i in range(MAX_DELEGATIONS):
            store.write(create_task, "dev", f"part {i}", owner="review", parent_id=handed[i % 10])
        err = refused(store, InvalidArgument, create_task, "dev", "one more", owner="review", parent_id=handed[0])
        assert str(err) == (f"dev already delegated {MAX_DELEGATIONS} tasks in the last 60 s; "
                            "wait before delegating more")
        # Past its cap, dev still hands on a task the person gave it.
        mine = store.write(create_task, OWNER, "the person's own", owner="dev")
        store.write(create_task, "dev", "handed on", owner="review", parent_id=mine.id)
