"""Approvals end to end through `agentdeck tool run`: a real terminal (pty) answering the
prompt, another terminal answering with `agentdeck approve`, expiry, cancellation, and
secrets that never show up anywhere."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import AGENTS, agentdeck_cmd, ok, one_line_error, run, subprocess_env

from agents.config import parse_config
from agents.gate import Gate
from agents.protocol import OWNER, Approval
from agents.store import AsyncStore, Store, queries
from agents.store import reducers as r


@pytest.fixture
def ws(home: Path, ws: Path) -> Path:
    """conftest's workspace, made the home's configured workspace."""
    (home / "config.toml").write_text(f'workspace = "{ws}"\n')
    return ws


class Terminal:
    """`agentdeck ...` with a pty as its terminal: what a person at the keyboard sees."""

    def __init__(self, home: Path, *args: str, **env: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(agentdeck_cmd(*args), env=subprocess_env(home, **env), stdin=slave,
                                     stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        self.screen = ""

    def read_until(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never shown; screen: {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the process closed the terminal
                    break
        return self.screen

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self) -> int:
        code = self.proc.wait(timeout=60)
        try:
            while select.select([self.master], [], [], 0.1)[0]:
                self.screen += os.read(self.master, 4096).decode("utf-8", "replace")
        except OSError:
            pass
        os.close(self.master)
        return code


def approvals(db_path: Path) -> list[Approval]:
    with Store.open(db_path, AGENTS) as store:
        return store.read(queries.approvals, status=None)


def tool_calls(db_path: Path) -> list:
    with Store.open(db_path, AGENTS) as store:
        return store.read(queries.tool_calls)


WRITE = '{"path": "notes/a.txt", "content": "hello"}'


def test_yes_once_runs_it_and_the_prompt_shows_what_will_run(home: Path, db_path: Path, ws: Path) -> None:
    term = Terminal(home, "tool", "run", "dev", "write_file", WRITE, "--reason", "save the notes")
    screen = term.read_until("[N]o?")
    assert "approval 1: dev wants write_file" in screen
    assert f"resolves to: {ws / 'notes' / 'a.txt'}" in screen
    assert "agent says:  'save the notes'  (the model's words)" in screen
    assert "saves `allow dev write_file 'notes/a.txt'`" in screen
    term.type("y\r")
    assert term.finish() == 0
    assert (ws / "notes" / "a.txt").read_text() == "hello"
    [a] = approvals(db_path)
    assert (a.status, a.scope, a.decided_by) == ("approved", "once", "user")
    assert [c.status for c in tool_calls(db_path)] == ["ok"]


def test_no_denies_and_nothing_is_written(home: Path, db_path: Path, ws: Path) -> None:
    term = Terminal(home, "tool", "run", "dev", "write_file", WRITE)
    term.read_until("[N]o?")
    term.type("n\r")
    assert term.finish() == 1
    assert "not approved: denied" in term.screen
    assert not (ws / "notes").exists()
    assert approvals(db_path)[0].status == "denied"
    assert [c.status for c in tool_calls(db_path)] == ["denied"]


def test_always_saves_exactly_the_rule_shown_and_the_next_call_runs(home: Path, db_path: Path, ws: Path) -> None:
    term = Terminal(home, "tool", "run", "dev", "write_file", WRITE)
    screen = term.read_until("[N]o?")
    term.type("a\r")
    assert term.finish() == 0
    [a] = approvals(db_path)
    shown = screen.split("saves `allow dev write_file ")[1].split("`")[0]
    rules = json.loads(ok(home, "rules", "--json"))
    saved = [x for x in rules if x["source"] == "approval"]
    assert len(saved) == 1 and repr(saved[0]["pattern"]) == shown == repr(a.always_rule)
    assert (saved[0]["agent"], saved[0]["tool"], saved[0]["decision"]) == ("dev", "write_file", "allow")
    # The same call again: allowed by that rule, no new approval.
    proc = run(home, "tool", "run", "dev", "write_file", WRITE.replace("hello", "again"))
    assert proc.returncode == 0
    assert len(approvals(db_path)) == 1 and (ws / "notes" / "a.txt").read_text() == "again"
    check = json.loads(ok(home, "policy", "check", "dev", "write_file", WRITE, "--json"))
    assert check["decision"] == "allow" and "(approval)" in check["rule"]


def test_approve_from_another_terminal(home: Path, db_path: Path, ws: Path) -> None:
    waiting = subprocess.Popen(agentdeck_cmd("tool", "run", "dev", "run_shell", '{"command": "echo hi > x.txt"}',
                                             "--approve-via", "cli"), env=subprocess_env(home),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not approvals(db_path):
        assert time.monotonic() < deadline and waiting.poll() is None
        time.sleep(0.1)
    listed = ok(home, "approvals")
    assert "resolves to: echo hi > x.txt  [not a plain command: redirection; runs: echo hi]" in listed
    assert "always:      not offered" in listed
    ok(home, "approve", "1")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "agentdeck approve 1" in err and "[exit status 0]" in out
    assert (ws / "x.txt").read_text() == "hi\n"


def test_unanswered_approvals_expire_as_denied(home: Path, db_path: Path, ws: Path) -> None:
    (home / "config.toml").write_text(f'workspace = "{ws}"\napproval_timeout_s = 1\n')
    proc = run(home, "tool", "run", "dev", "write_file", WRITE, "--approve-via", "cli")
    assert proc.returncode == 1 and "expired unanswered (timeout)" in proc.stdout
    [a] = approvals(db_path)
    assert (a.status, a.decided_by) == ("expired", "timeout")
    assert not (ws / "notes").exists()


def test_without_a_terminal_an_ask_is_denied_not_allowed(home: Path, db_path: Path, ws: Path) -> None:
    proc = run(home, "tool", "run", "dev", "write_file", WRITE)
    assert proc.returncode == 1 and "no terminal to ask" in proc.stderr
    assert approvals(db_path)[0].decided_by == "headless_policy"
    assert not (ws / "notes").exists()


def test_cancelling_the_task_cancels_its_pending_approval(home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "write notes", owner="dev")
    waiting = subprocess.Popen(agentdeck_cmd("tool", "run", "dev", "write_file", WRITE, "--task", str(task.id),
                                             "--approve-via", "cli"), env=subprocess_env(home),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not approvals(db_path):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with Store.open(db_path, AGENTS) as store:
        store.write(r.set_task_status, OWNER, task.id, "cancelled")
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and "not approved: cancelled" in out
    assert approvals(db_path)[0].status == "cancelled" and not (ws / "notes").exists()


def test_deny_rules_refuse_without_asking(home: Path, db_path: Path, ws: Path) -> None:
    proc = run(home, "tool", "run", "dev", "run_shell", '{"command": "sudo ls"}')
    assert proc.returncode == 1 and "denied: a rule says deny (config rule: * run_shell 'sudo' deny" in proc.stdout
    assert approvals(db_path) == [] and [c.status for c in tool_calls(db_path)] == ["denied"]


async def test_session_approval_covers_the_same_call_until_the_instance_stops(home: Path, db_path: Path,
                                                                             ws: Path) -> None:
    config = parse_config(f'workspace = "{ws}"\n')
    store = await AsyncStore(db_path, AGENTS).open()
    asked: list[int] = []

    async def answer_session(approval: Approval) -> None:
        asked.append(approval.id)
        await store.write(r.decide_approval, OWNER, approval.id, True, scope="session")

    try:
        gate = Gate(store, config, home)
        for content in ("one", "two", "three"):
            outcome = await gate.call("dev", "write_file", {"path": "s.txt", "content": content},
                                      on_ask=answer_session)
            assert outcome.result.status == "ok"
        assert len(asked) == 1 and (ws / "s.txt").read_text() == "three"
        other = await gate.call("dev", "write_file", {"path": "t.txt", "content": "x"}, on_ask=answer_session)
        assert other.result.status == "ok" and len(asked) == 2  # another path asks again
        fresh = Gate(store, config, home)  # a new instance: the session grant is gone
        await fresh.call("dev", "write_file", {"path": "s.txt", "content": "four"}, on_ask=answer_session)
        assert len(asked) == 3
    finally:
        await store.close()


async def test_a_cancelled_call_withdraws_its_approval(home: Path, db_path: Path, ws: Path) -> None:
    config = parse_config(f'workspace = "{ws}"\n')
    store = await AsyncStore(db_path, AGENTS).open()
    try:
        gate = Gate(store, config, home)
        call = asyncio.create_task(gate.call("dev", "write_file", {"path": "c.txt", "content": "x"}))
        for _ in range(600):  # polled: the approval is written by the gate's own task
            if await store.read(queries.approvals):
                break
            await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        [a] = await store.read(queries.approvals, status=None)
        assert a.status == "cancelled"
        [c] = await store.read(queries.tool_calls)
        assert c.status == "denied" and not (ws / "c.txt").exists()
    finally:
        await store.close()


def test_a_huge_integer_is_a_bad_argument_fed_back_not_an_overflow(home: Path, db_path: Path, ws: Path) -> None:
    """`limit: 10**30` from a model: refused by the tool's schema, with the field and its
    range, like any bad argument; the intent row holds it as digits, nothing overflows."""
    proc = run(home, "tool", "run", "ops", "list_processes", '{"limit": ' + str(10**30) + "}")
    assert proc.returncode == 1
    assert "denied: list_processes: bad arguments" in proc.stdout and "limit must be 1..200" in proc.stdout
    assert "Overflow" not in proc.stdout + proc.stderr and "x0a" not in proc.stderr
    [c] = tool_calls(db_path)
    assert c.status == "denied" and "limit must be 1..200" in (c.result or "")
    assert c.arguments == {"limit": str(10**30)}
    assert "Overflow" not in json.dumps(c.arguments) + (c.result or "")


# --- policy check, rules ---


def test_policy_check_answers_without_running(home: Path, ws: Path) -> None:
    out = ok(home, "policy", "check", "dev", "write_file", '{"path": "../x", "content": "y"}')
    assert "decision:    deny" in out and "outside the workspace" in out
    assert not (ws.parent / "x").exists()
    check = json.loads(ok(home, "policy", "check", "review", "run_shell", '{"command": "git status -s"}',
                          "--json"))
    assert check["decision"] == "allow" and check["resolved"] == "git status -s"


@pytest.mark.parametrize(("args", "message"), [
    (("nobody", "read_file", "{}"), "unknown agent 'nobody'"),
    (("dev", "teleport", "{}"), "unknown tool 'teleport'"),
    (("dev", "read_file", "{nope"), "ARGS_JSON is not JSON"),
    (("dev", "read_file", "[1]"), "must be a JSON object"),
])
def test_policy_check_and_tool_run_refuse_bad_input_in_one_line(home: Path, args: tuple[str, ...],
                                                                message: str) -> None:
    for command in (("policy", "check"), ("tool", "run")):
        proc = run(home, *command, *args)
        assert proc.returncode == 2 and message in one_line_error(proc)


def test_rules_add_list_remove(home: Path) -> None:
    out = ok(home, "rules", "add", "dev", "run_shell", "make test", "allow")
    rule_id = int(out.split()[1].rstrip(":"))
    listed = json.loads(ok(home, "rules", "--json"))
    mine = [x for x in listed if x["id"] == rule_id]
    assert mine and mine[0]["pattern"] == "make test" and mine[0]["source"] == "user"
    assert any(x["source"] == "config" and x["pattern"] == "git status" for x in listed)
    ok(home, "rules", "remove", str(rule_id))
    assert not [x for x in json.loads(ok(home, "rules", "--json")) if x["id"] == rule_id]
    proc = run(home, "rules", "add", "dev", "run_shell", "x", "maybe")
    assert proc.returncode == 2
    proc = run(home, "rules", "add", "nobody", "run_shell", "x", "allow")
    assert proc.returncode == 2 and "unknown agent" in one_line_error(proc)


# --- secrets ---


def test_secret_values_never_appear_anywhere(home: Path, db_path: Path, ws: Path,
                                             keyring_env: dict[str, str]) -> None:
    keyring_value = "kr-9f8e7d6c5b4a"
    env_value = "env-1a2b3c4d5e6f"
    run(home, "secret", "set", "tok", stdin=keyring_value + "\n", **keyring_env)
    (home / "config.toml").write_text(
        f'workspace = "{ws}"\nsandbox = "off"\n[agents.dev.tool_env]\nTOKEN = "keyring:tok"\n'
        'OTHER = "keyring:other"\n')
    (ws / "leak.txt").write_text(f"the token is {keyring_value} and {env_value}\n")
    env = {**keyring_env, "AGENTDECK_SECRET_OTHER": env_value}
    ok(home, "rules", "add", "dev", "run_shell", "env", "allow", **env)
    shown = ok(home, "tool", "run", "dev", "run_shell", '{"command": "env"}', **env)
    shown += ok(home, "tool", "run", "dev", "read_file", '{"path": "leak.txt"}', **env)
    shown += ok(home, "tool", "run", "dev", "run_shell", '{"command": "env"}', "--json", **env)
    assert "TOKEN=[secret:tok]" in shown and "OTHER=[secret:other]" in shown
    assert "the token is [secret:tok] and [secret:other]" in shown
    log = ok(home, "log", **env) + ok(home, "log", "--json", **env)
    conn = sqlite3.connect(db_path)
    stored = " ".join(str(row) for row in conn.execute("SELECT result, arguments FROM tool_calls"))
    events = b" ".join(row[0] for row in conn.execute("SELECT payload FROM events"))
    conn.close()
    assert "[secret:tok]" in stored
    for value in (keyring_value, env_value):
        assert value not in shown and value not in log and value not in stored
        assert value.encode() not in events


# --- without bubblewrap: fail closed ---


def test_without_bwrap_doctor_says_how_to_install_and_every_command_asks(home: Path, ws: Path) -> None:
    no_bwrap = {"PATH": "/nonexistent"}  # the CLI runs by absolute path; bwrap is not found
    doctor = {c["name"]: c for c in json.loads(run(home, "doctor", "--json", **no_bwrap).stdout)}
    assert doctor["sandbox"]["status"] == "warn"
    assert "every shell command asks" in doctor["sandbox"]["detail"]
    assert "apt install bubblewrap" in doctor["sandbox"]["detail"]
    check = json.loads(ok(home, "policy", "check", "review", "run_shell", '{"command": "git status"}',
                          "--json", **no_bwrap))
    assert check["decision"] == "ask" and "no sandbox" in check["reason"]
    (home / "config.toml").write_text(f'workspace = "{ws}"\nsandbox = "bwrap"\n')
    doctor = {c["name"]: c for c in json.loads(run(home, "doctor", "--json", **no_bwrap).stdout)}
    assert doctor["sandbox"]["status"] == "fail"


def test_bench_policy_reports_each_case(home: Path) -> None:
    figures = json.loads(ok(home, "bench", "policy", "--calls", "3", "--rounds", "1", "--json"))
    assert [(f["case"], f["decision"]) for f in figures] == [
        ("plain, allowed", "allow"), ("risky option", "ask"), ("pipeline", "ask"), ("20 commands", "ask"),
        ("denied via wrapper", "deny"), ("file write", "ask")]
    assert all(f["decide_us"] > 0 for f in figures)
