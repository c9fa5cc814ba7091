"""The real `agentdeck` CLI in subprocesses, against a real database in a temp home."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import AGENTS, agentdeck_cmd, ok, one_line_error, run, subprocess_env

from agents.config import parse_config
from agents.store import Store, queries
from agents.store import reducers as r
from agents.store.schema import SCHEMA_VERSION

# --- send / tasks ---


def test_send_prints_only_the_new_task_id(home: Path) -> None:
    first = ok(home, "send", "--to", "dev", "fix", "the", "build")
    second = ok(home, "send", "what is our disk usage?")
    assert first.strip().isdigit() and second.strip().isdigit()
    assert int(second) == int(first) + 1
    tasks = json.loads(ok(home, "tasks", "--json"))
    by_id = {t["id"]: t for t in tasks}
    assert by_id[int(first)]["owner"] == "dev"
    assert by_id[int(first)]["title"] == "fix the build"
    assert by_id[int(second)]["owner"] is None  # unassigned: for the router
    for t in tasks:
        assert {"id", "parent_id", "owner", "created_by", "title", "status", "priority",
                "created_at"} <= t.keys()
        assert t["created_by"] == "owner" and t["status"] == "queued"


def test_send_dash_reads_the_request_from_stdin(home: Path) -> None:
    """Issue 15: `send -` made a task titled "-". The body comes from stdin; the title is
    its first line, shortened; empty stdin is a one-line error and writes nothing."""
    body = "  the build fails on main\nsteps: make test\n\tsee the log\n"
    task_id = int(run(home, "send", "--to", "dev", "-", stdin=body).stdout)
    [task] = json.loads(ok(home, "tasks", "--json"))
    assert (task["id"], task["title"], task["body"]) == (task_id, "the build fails on main", body.strip())
    long = run(home, "send", "-", stdin="x" * 500 + "\nmore")
    assert long.returncode == 0
    titles = [t["title"] for t in json.loads(ok(home, "tasks", "--json"))]
    assert len(titles[-1]) <= 120 and titles[-1].endswith("…")
    for empty in ("", " \n\t\n"):
        proc = run(home, "send", "--to", "dev", "-", stdin=empty)
        assert proc.returncode != 0
        assert "stdin was empty" in one_line_error(proc)
    assert len(json.loads(ok(home, "tasks", "--json"))) == 2


def test_send_to_unknown_agent_is_exit_2_and_writes_nothing(home: Path) -> None:
    proc = run(home, "send", "--to", "nobody", "hello")
    assert proc.returncode == 2
    assert "unknown agent 'nobody'" in one_line_error(proc)
    assert proc.stdout == ""
    assert json.loads(ok(home, "tasks", "--json")) == []


def test_tasks_tree_nests_children(home: Path, db_path: Path) -> None:
    root = int(ok(home, "send", "--to", "lead", "ship release"))
    with Store.open(db_path, AGENTS) as store:
        child = store.write(r.create_task, "lead", "write notes", owner="scribe", parent_id=root)
        store.write(r.create_task, "scribe", "collect changes", owner="scribe", parent_id=child.id)
    tree = json.loads(ok(home, "tasks", "--json", "--tree"))
    assert [n["id"] for n in tree] == [root]
    assert tree[0]["children"][0]["title"] == "write notes"
    assert tree[0]["children"][0]["children"][0]["title"] == "collect changes"
    text = ok(home, "tasks", "--tree")
    assert text.index("ship release") < text.index("write notes") < text.index("collect changes")


# --- status ---


def test_status_json_without_a_running_instance(home: Path, db_path: Path) -> None:
    ok(home, "send", "--to", "dev", "one")
    with Store.open(db_path, AGENTS) as store:
        store.write(r.request_approval, "dev", "run_shell", {"cmd": "rm -rf build"},
                    "rm -rf /w/build", "clean", timeout_s=600)
    status = json.loads(ok(home, "status", "--json"))
    assert [a["name"] for a in status["agents"]] == list(AGENTS)
    for agent in status["agents"]:
        assert {"name", "state", "health", "task_id", "heartbeat_at"} <= agent.keys()
        assert agent["state"] == "offline" and agent["health"] == "amber"
    assert status["pending_approvals"] == 1
    assert status["tasks"]["queued"] == 1 and status["tasks"]["done"] == 0


# --- approvals ---


@pytest.fixture
def approval_id(db_path: Path) -> int:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, "owner", "clean", owner="dev")
        return store.write(
            r.request_approval, "dev", "run_shell", {"cmd": "make clean"}, "make clean",
            "clean before build", timeout_s=600, task_id=task.id,
        ).id


def test_approvals_lists_pending_with_arguments(home: Path, approval_id: int) -> None:
    items = json.loads(ok(home, "approvals", "--json"))
    assert [a["id"] for a in items] == [approval_id]
    assert items[0]["agent"] == "dev" and items[0]["arguments"] == {"cmd": "make clean"}
    assert items[0]["resolved"] == "make clean" and items[0]["status"] == "pending"


def test_approve_then_approve_again_is_exit_1(home: Path, approval_id: int) -> None:
    out = ok(home, "approve", str(approval_id))
    assert f"approval {approval_id} approved" in out
    assert json.loads(ok(home, "approvals", "--json")) == []
    decided = json.loads(ok(home, "approvals", "--json", "--all"))[0]
    assert decided["status"] == "approved" and decided["decided_by"] == "user"
    again = run(home, "approve", str(approval_id))
    assert again.returncode == 1
    assert "not pending" in one_line_error(again)


def test_approve_always_saves_a_rule(home: Path, db_path: Path, approval_id: int) -> None:
    ok(home, "approve", "--always", str(approval_id))
    with Store.open(db_path, AGENTS) as store:
        rules = store.read(queries.rules)
    assert [(x.agent, x.tool, x.pattern, x.decision, x.source) for x in rules] == [
        ("dev", "run_shell", "make clean", "allow", "approval")
    ]


def test_deny_and_unknown_id(home: Path, approval_id: int) -> None:
    ok(home, "deny", str(approval_id))
    assert json.loads(ok(home, "approvals", "--json", "--all"))[0]["status"] == "denied"
    missing = run(home, "deny", "999")
    assert missing.returncode == 1
    assert "approval 999 not found" in one_line_error(missing)


# --- log ---


def test_log_json_lines(home: Path) -> None:
    task_id = int(ok(home, "send", "--to", "ops", "check disk"))
    lines = [json.loads(x) for x in ok(home, "log", "--json").splitlines()]
    assert lines, "the log is empty"
    for e in lines:
        assert {"id", "ts", "kind", "actor", "subject", "payload"} <= e.keys()
    ids = [e["id"] for e in lines]
    assert ids == sorted(ids)
    created = [e for e in lines if e["kind"] == "task.created"]
    assert created[-1]["payload"]["task"]["id"] == task_id
    assert created[-1]["subject"] == f"task:{task_id}" and created[-1]["actor"] == "owner"
    since = [json.loads(x)["id"] for x in ok(home, "log", "--json", "--since", str(ids[-2])).splitlines()]
    assert since == [ids[-1]]
    assert len(ok(home, "log", "--json", "--last", "2").splitlines()) == 2


def test_log_follow_prints_new_events(home: Path) -> None:
    ok(home, "send", "first")
    proc = subprocess.Popen(
        agentdeck_cmd("log", "--json", "--follow"), env=subprocess_env(home),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        # Everything already there comes first ...
        seen = []
        while not any(e["kind"] == "task.created" for e in seen):
            seen.append(json.loads(proc.stdout.readline()))
        # ... then what another process writes later.
        new_id = int(ok(home, "send", "second"))
        while True:
            event = json.loads(proc.stdout.readline())
            if event["kind"] == "task.created":
                assert event["payload"]["task"]["id"] == new_id
                break
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- bad input ---


def test_unknown_command_and_bad_arguments_exit_2(home: Path) -> None:
    proc = run(home, "frobnicate")
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc = run(home, "approve", "abc")
    assert proc.returncode == 2 and "not a whole number" in proc.stderr
    proc = run(home, "send")
    assert proc.returncode == 2


def test_bad_config_key_names_the_key_path(home: Path) -> None:
    (home / "config.toml").write_text('[agents.dev]\ntool = ["x"]\n')
    proc = run(home, "status")
    assert proc.returncode == 2
    assert "unknown key agents.dev.tool" in one_line_error(proc)
    (home / "config.toml").write_text('approval_timeout_s = "soon"\n')
    proc = run(home, "tasks")
    assert proc.returncode == 2
    assert "approval_timeout_s" in one_line_error(proc)


def test_corrupt_database_is_exit_2_and_left_untouched(home: Path, db_path: Path) -> None:
    junk = b"this is not a database, it is a shopping list\n" * 100
    db_path.write_bytes(junk)
    for args in (("tasks",), ("send", "hi"), ("status", "--json")):
        proc = run(home, *args)
        assert proc.returncode == 2
        assert "not an SQLite database" in one_line_error(proc)
    assert db_path.read_bytes() == junk


def test_database_from_a_newer_schema_is_refused(home: Path, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = db_path.read_bytes()
    proc = run(home, "tasks")
    assert proc.returncode == 2
    assert "newer" in one_line_error(proc)
    assert db_path.read_bytes() == before


# --- init / doctor ---


def test_init_writes_the_defaults_and_refuses_to_overwrite(home: Path) -> None:
    ok(home, "init")
    text = (home / "config.toml").read_text()
    assert text.startswith("#")
    parsed = parse_config(text)
    assert list(parsed.agents) == list(AGENTS)
    (home / "config.toml").write_text("# mine\n")
    proc = run(home, "init")
    assert proc.returncode == 1 and "--force" in one_line_error(proc)
    assert (home / "config.toml").read_text() == "# mine\n"
    ok(home, "init", "--force")
    assert (home / "config.toml").read_text() == text


def test_doctor_reports_each_part(home: Path) -> None:
    out = ok(home, "doctor")
    names = [line.split()[1] for line in out.splitlines()]
    assert names == ["config", "database", "permissions", "model", "llama-cpp-python", "gpu", "sandbox",
                     "checkpoints", "keyring"]
    assert all(line.split()[0] in ("ok", "warn") for line in out.splitlines())


def test_doctor_fails_on_a_missing_model(home: Path) -> None:
    (home / "config.toml").write_text('[inference]\nmodel = "/nowhere/model.gguf"\n')
    proc = run(home, "doctor", "--json")
    assert proc.returncode == 1
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["model"]["status"] == "fail"
    assert "/nowhere/model.gguf" in checks["model"]["detail"]
    assert checks["config"]["status"] == "ok"


def test_unusable_home_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("")
    for args in (("send", "hi"), ("init",), ("tasks",)):
        proc = run(tmp_path, "--home", str(afile / "sub"), *args)
        assert proc.returncode != 0
        assert "Not a directory" in one_line_error(proc)


def test_log_into_a_closed_pipe_exits_quietly(home: Path, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        for i in range(2000):
            store.write(r.create_task, "owner", f"task {i} " * 10)
    proc = subprocess.run(
        f"{' '.join(agentdeck_cmd('log', '--json'))} | head -n 1",
        shell=True, env=subprocess_env(home), capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == ""


def test_huge_numbers_and_undecodable_text_are_handled(home: Path) -> None:
    for args in (("approve", "99999999999999999999"), ("log", "--since", "1" + "0" * 25)):
        proc = run(home, *args)
        assert proc.returncode == 2 and "out of range" in proc.stderr
    proc = subprocess.run(
        [*agentdeck_cmd("send"), b"caf\xe9 au lait"], env=subprocess_env(home),
        capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(ok(home, "tasks", "--json"))[0]["title"] == "caf\ufffd au lait"
    for args, message in (
        (("send", "--priority", "10", "x"), "priority is 0..9"),
        (("tasks", "--status", "bogus"), "invalid choice"),
        (("tasks", "--owner", "nobody"), "unknown agent 'nobody'"),
    ):
        proc = run(home, *args)
        assert proc.returncode == 2 and message in proc.stderr


def test_approving_an_expired_approval_is_refused(home: Path, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        approval = store.write(r.request_approval, "dev", "run_shell", {"cmd": "rm -rf x"},
                               "rm -rf x", "clean", timeout_s=0.01)
    import time

    time.sleep(0.05)
    proc = run(home, "approve", "--always", str(approval.id))
    assert proc.returncode == 1 and "expired" in one_line_error(proc)
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.rules) == []  # no allow rule slipped in


def test_log_skips_an_event_from_a_newer_agentdeck(home: Path, db_path: Path) -> None:
    import msgspec

    ok(home, "send", "before")
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO events (ts, kind, actor, subject, payload) VALUES (0, 'x.y', 'system', '', ?)",
                 (msgspec.msgpack.encode([99, {"type": "x.y"}]),))
    conn.commit()
    conn.close()
    ok(home, "send", "after")
    proc = run(home, "log", "--json")
    assert proc.returncode == 0
    titles = [e["payload"]["task"]["title"] for e in map(json.loads, proc.stdout.splitlines())
              if e["kind"] == "task.created"]
    assert titles == ["before", "after"]
    assert "protocol version 99" in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_never_writes_the_database(home: Path, db_path: Path) -> None:
    ok(home, "send", "x")
    before = db_path.read_bytes()
    mtime = db_path.stat().st_mtime_ns
    ok(home, "doctor")
    assert db_path.read_bytes() == before and db_path.stat().st_mtime_ns == mtime
