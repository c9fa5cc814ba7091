"""doctor finishes on the set-ups it exists for; backup copies a live database consistently."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AGENTS, REPO, agentdeck_cmd, ok, one_line_error, run, subprocess_env

from agents.store import Store
from agents.store import reducers as r

CHECK_NAMES = ["config", "database", "permissions", "model", "llama-cpp-python", "gpu", "sandbox",
               "checkpoints", "keyring"]


def damage_schema(db_path: Path) -> None:
    """Overwrite bytes of a table's CREATE statement in sqlite_master with invalid UTF-8:
    SQLite can no longer parse the schema and quotes the bytes in its error message."""
    data = bytearray(db_path.read_bytes())
    at = data.index(b"CREATE TABLE tasks")
    data[at + 7: at + 12] = b"\xff\xfe\xfd\xfc\xfb"
    db_path.write_bytes(bytes(data))


def doctor(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(agentdeck_cmd(*args, "doctor", "--json"), env=subprocess_env(cwd, **env),
                          capture_output=True, text=True, timeout=60, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_doctor_with_a_relative_home(tmp_path: Path) -> None:
    (tmp_path / "rel").mkdir()
    subprocess.run(agentdeck_cmd("--home", "rel", "send", "x"), env=subprocess_env(tmp_path / "rel"),
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    proc = doctor(tmp_path, "--home", "rel")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["database"]["status"] == "ok", checks["database"]
    assert str(tmp_path / "rel" / "agentdeck.db") in checks["database"]["detail"]


def test_a_damaged_schema_is_reported_by_doctor_and_refused_by_commands(home: Path, db_path: Path) -> None:
    ok(home, "send", "before the damage")
    damage_schema(db_path)
    before = db_path.read_bytes()
    proc = run(home, "tasks")
    assert proc.returncode == 2
    assert "damaged" in one_line_error(proc) and "doctor" in one_line_error(proc)

    proc = run(home, "doctor", "--json")
    assert proc.returncode == 1
    checks = json.loads(proc.stdout)
    assert [c["name"] for c in checks] == CHECK_NAMES  # every check ran
    database = checks[1]
    assert database["status"] == "fail"
    assert "damaged" in database["detail"] and "agentdeck backup" in database["detail"]
    text = run(home, "doctor").stdout
    assert len(text.splitlines()) == len(CHECK_NAMES)
    assert db_path.read_bytes() == before  # looked at, never touched


def test_doctor_keeps_going_when_the_config_is_broken(home: Path) -> None:
    (home / "config.toml").write_text("[agents.dev]\ntool = 1\n")
    proc = run(home, "doctor", "--json")
    checks = json.loads(proc.stdout)
    assert [c["name"] for c in checks] == CHECK_NAMES
    assert checks[0]["status"] == "fail" and "unknown key agents.dev.tool" in checks[0]["detail"]


def test_backup_of_an_idle_database(home: Path, db_path: Path, tmp_path: Path) -> None:
    ok(home, "send", "keep me")
    out = ok(home, "backup", str(tmp_path / "copy.db"))
    assert "integrity ok" in out and "1 tasks" in out
    conn = sqlite3.connect(tmp_path / "copy.db")
    assert conn.execute("SELECT title FROM tasks").fetchall() == [("keep me",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    conn.close()
    assert (tmp_path / "copy.db").stat().st_mode & 0o077 == 0
    # A second backup to the same file needs --force; a directory gets a dated file.
    proc = run(home, "backup", str(tmp_path / "copy.db"))
    assert proc.returncode == 1 and "--force" in one_line_error(proc)
    ok(home, "backup", "--force", str(tmp_path / "copy.db"))
    (tmp_path / "dir").mkdir()
    ok(home, "backup", str(tmp_path / "dir"))
    assert [p.name.startswith("agentdeck-") for p in (tmp_path / "dir").iterdir()] == [True]


def test_backup_refuses_bad_targets(home: Path, db_path: Path, tmp_path: Path) -> None:
    proc = run(home, "backup", str(tmp_path / "x.db"))
    assert proc.returncode == 2 and "nothing to back up" in one_line_error(proc)
    ok(home, "send", "x")
    proc = run(home, "backup", str(tmp_path / "missing" / "x.db"))
    assert proc.returncode == 2 and "no such directory" in one_line_error(proc)
    proc = run(home, "backup", str(db_path))
    assert proc.returncode == 2 and "the database itself" in one_line_error(proc)


@pytest.mark.timeout(180)
def test_backups_taken_under_concurrent_writes_are_consistent(home: Path, db_path: Path, tmp_path: Path) -> None:
    """A writer process commits tasks (row + event in one transaction) as fast as it can
    while backups run: every copy passes integrity_check and is one moment's snapshot:
    as many tasks as task.created events, event ids without a gap."""
    with Store.open(db_path, AGENTS) as store:
        store.write(r.create_task, "owner", "first")
    writer = subprocess.Popen([sys.executable, str(REPO / "tests" / "crash_writer.py"), str(db_path)],
                              env=subprocess_env(home), stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "READY"
        for _ in range(50):  # let it get going
            writer.stdout.readline()
        sizes = []
        for i in range(4):
            copy = tmp_path / f"copy{i}.db"
            out = ok(home, "backup", str(copy))
            assert "integrity ok" in out
            conn = sqlite3.connect(copy)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                tasks = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
                created = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'task.created'").fetchone()[0]
                count, top = conn.execute("SELECT COUNT(*), MAX(id) FROM events").fetchone()
            finally:
                conn.close()
            assert tasks == created and count == top
            sizes.append(tasks)
        assert writer.poll() is None  # the writer never stopped
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # later copies saw more
    finally:
        writer.kill()
        writer.wait()


# --- a full disk is not a damaged database ---


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, filled up by `fill()`: a real ENOSPC, no simulation."""
    ci = os.environ.get("CI") == "true"
    if os.geteuid() != 0 and not ci:
        pytest.skip("mounting a small tmpfs needs root (CI runs this test as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        message = f"cannot mount a tmpfs here: {proc.stderr.strip()}"
        pytest.fail(message) if ci else pytest.skip(message)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(mnt: Path) -> Path:
    """Write until the filesystem says ENOSPC; the file is what to delete to make room."""
    filler = mnt / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def test_a_full_disk_is_reported_as_such_and_never_as_damage(full_disk: Path, tmp_path: Path) -> None:
    home = full_disk / "home"
    home.mkdir(mode=0o700)
    ok(home, "send", "--to", "dev", "written before the disk filled")
    filler = fill(full_disk)
    assert shutil.disk_usage(full_disk).free == 0

    proc = run(home, "doctor")
    [database] = [text for text in proc.stdout.splitlines() if " database " in text]
    assert proc.returncode == 1 and database.startswith("fail")
    assert f"disk full: {home} has 0 bytes free; free at least 4.0 MiB" in database, database
    assert "passes quick_check" in database
    assert not {"move", "restore", "damaged", "recover"} & set(database.lower().split()), database

    for command in ("tasks", "log", "status"):
        proc = run(home, command)
        assert proc.returncode != 0 and proc.stdout == ""
        assert one_line_error(proc) == f"agentdeck: disk full: {home} has 0 bytes free; free at least 4.0 MiB"

    # A backup onto the full disk names the disk and how much the copy needs; no partial file.
    elsewhere = tmp_path / "home"
    elsewhere.mkdir(mode=0o700)
    ok(elsewhere, "send", "to back up")
    proc = run(elsewhere, "backup", str(full_disk / "copy.db"))
    assert proc.returncode != 0
    assert one_line_error(proc).startswith(f"agentdeck: disk full: {full_disk} has 0 bytes free; free at least ")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", "home"]

    filler.unlink()  # room again: everything is still there
    assert "written before the disk filled" in ok(home, "tasks")
    assert run(home, "doctor").stdout.count("ok    database") == 1


def test_only_a_disk_short_of_room_turns_an_io_error_into_disk_full(db_path: Path) -> None:
    from agents.store.database import disk_full

    def sqlite_error(code: int) -> sqlite3.OperationalError:
        err = sqlite3.OperationalError("disk I/O error" if code == 10 else "database or disk is full")
        err.sqlite_errorcode = code  # type: ignore[attr-defined]
        return err

    assert disk_full(db_path, sqlite_error(10)) is None  # plenty of room: a real I/O error
    assert disk_full(db_path, sqlite_error(5)) is None  # busy
    assert disk_full(db_path, sqlite_error(10), need=1 << 50) is not None
    for err in (sqlite_error(13), OSError(errno.ENOSPC, "No space left on device")):
        full = disk_full(db_path, err, need=1 << 50)
        assert full is not None and str(full).startswith(f"disk full: {db_path.parent} has ")
        assert str(full).endswith("free at least 1073741824.0 MiB")


# --- backends (issue 18): one line per backend in use, a remote one probed ---


def remote_config(url: str) -> str:
    return (f'[backends.remote]\nkind = "openai"\nurl = "{url}"\nmodel = "smollm2"\n'
            '[agents.ops]\nmodel = "remote"\n')


@pytest.mark.timeout(180)
def test_doctor_probes_a_remote_backend_that_is_up(home: Path) -> None:
    from tests.openai_server import start_or_skip  # fails instead of skipping under CI=true

    server = start_or_skip()
    try:
        (home / "config.toml").write_text(remote_config(server.url))
        proc = run(home, "doctor", "--json")
    finally:
        server.stop()
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert [n for n in checks if n.startswith("backend ")] == ["backend embedded", "backend remote"]
    remote = checks["backend remote"]
    assert remote["status"] == "ok", remote
    assert server.url in remote["detail"] and "'smollm2' listed" in remote["detail"]
    assert "schema-constrained output" in remote["detail"] and "agents: ops" in remote["detail"]
    assert "ops" not in checks["backend embedded"]["detail"].split("agents: ")[1]


@pytest.mark.timeout(60)
def test_doctor_warns_of_a_remote_backend_that_is_down_in_one_line(home: Path) -> None:
    from tests.openai_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    secret = "sk-doctor-test-0123456789abcdef"
    (home / "config.toml").write_text(remote_config(url).replace(
        'model = "smollm2"\n', 'model = "smollm2"\napi_key = "env:AGENTDECK_DOCTOR_KEY"\n', 1))
    proc = run(home, "doctor", AGENTDECK_DOCTOR_KEY=secret)
    lines = [ln for ln in proc.stdout.splitlines() if "backend remote" in ln]
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("warn") and url in lines[0] and "unreachable" in lines[0]
    assert "ops" in lines[0] and "will fail their tasks" in lines[0]
    assert secret not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout  # a warning, not a failure of the set-up
