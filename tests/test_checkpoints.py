"""Checkpoints, `changes`, `undo` and `redo`, for real: tool calls through the real gate
(shell commands in real bubblewrap), a real shadow git repository, the real CLI in
subprocesses, and kill -9 in the middle of an undo."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    agentdeck_cmd,
    as_unprivileged,
    ok,
    one_line_error,
    require_bwrap,
    run,
    subprocess_env,
    time_left,
)

from agents.checkpoints.changes import task_changes
from agents.checkpoints.shadow import Limits, ShadowRepo
from agents.checkpoints.undo import UndoRefused, restore
from agents.config import Config, parse_config
from agents.gate import Gate
from agents.protocol import OWNER, Approval
from agents.store import AsyncStore
from agents.store import reducers as r

COMMANDS = ("sed", "rm", "mkdir", "cp", "ln", "chmod", "truncate", "mv")


def config_text(ws: Path, extra: str = "") -> str:
    rules = "".join(f'[[rules]]\nagent = "dev"\ntool = "{t}"\npattern = "**"\ndecision = "allow"\n\n'
                    for t in ("write_file", "edit_file", "append_file"))
    rules += "".join(f'[[rules]]\nagent = "dev"\ntool = "run_shell"\npattern = "{c}"\ndecision = "allow"\n\n'
                     for c in COMMANDS)
    # dev works in the workspace itself here (in a repository its default is a worktree of
    # its own, which tests/test_worktrees.py covers).
    return f'workspace = "{ws}"\n{extra}\n[agents.dev]\nisolation = "shared"\n\n{rules}'


@pytest.fixture
def config(home: Path, ws: Path) -> Config:
    require_bwrap("shell commands")
    text = config_text(ws)
    (home / "config.toml").write_text(text)  # the same config for the CLI's undo
    return parse_config(text)


def git(ws: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=ws, env=env, check=True, capture_output=True, text=True,
                          timeout=30).stdout


def seed(ws: Path) -> None:
    """A workspace that is a git repository of its own, with text, binary, a link, a
    subdirectory, an executable and an ignored file."""
    (ws / "a.txt").write_text("one\ntwo\nthree\n")
    (ws / "k.txt").write_text("keep\n")
    (ws / "bin.dat").write_bytes(bytes(range(256)) * 4)
    (ws / "sub").mkdir()
    (ws / "sub" / "s.txt").write_text("in sub\n")
    (ws / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (ws / "run.sh").chmod(0o755)
    os.symlink("a.txt", ws / "link")
    (ws / ".gitignore").write_text("*.log\n")
    (ws / "noise.log").write_text("ignored\n")
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "start")


def dot_git(ws: Path) -> dict[str, tuple[int, str]]:
    """Every file under the workspace's own .git: mode and content hash."""
    found = {}
    for path in sorted((ws / ".git").rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(ws))] = (st.st_mode, digest)
    return found


async def observed_tree(tmp_path: Path, ws: Path) -> str:
    """The workspace's tree hash, by a shadow repository of an independent home."""
    return (await ShadowRepo(tmp_path / "observer", ws).snapshot()).tree


async def new_task(store: AsyncStore, title: str = "change things") -> int:
    task = await store.write(r.create_task, OWNER, title, owner="dev")
    return task.id


async def call(gate: Gate, tool: str, task_id: int, **arguments: object) -> str:
    """The call, run; one the gate asks about (`sed -i` always asks) the person approves."""
    async def approve(approval: Approval) -> None:
        await gate.store.write(r.decide_approval, OWNER, approval.id, True)

    outcome = await gate.call("dev", tool, arguments, task_id=task_id, on_ask=approve)
    assert outcome.result.status == "ok", outcome.result.text
    return outcome.result.text


async def end(store: AsyncStore, task_id: int) -> None:
    await store.write(r.cancel_task, OWNER, task_id)


@pytest.mark.timeout(180)
async def test_a_task_of_writes_edits_and_shell_commands_is_undone_exactly(
        astore: AsyncStore, config: Config, home: Path, ws: Path, tmp_path: Path) -> None:
    seed(ws)
    own_git = dot_git(ws)
    before = await observed_tree(tmp_path, ws)
    gate = Gate(astore, config, home)
    tid = await new_task(astore)
    await call(gate, "write_file", tid, path="new/deep/n.txt", content="hello\n")
    await call(gate, "edit_file", tid, path="a.txt", old="two", new="TWO")
    await call(gate, "run_shell", tid, command="sed -i s/keep/kept/ k.txt")
    await call(gate, "run_shell", tid, command="rm sub/s.txt")
    await call(gate, "run_shell", tid, command="mkdir -p d2/e")
    await call(gate, "write_file", tid, path="d2/e/f.txt", content="f\n")
    await call(gate, "run_shell", tid, command="truncate -s 100 bin.dat")
    await call(gate, "run_shell", tid, command="chmod -x run.sh")
    await call(gate, "run_shell", tid, command="ln -sfn k.txt link")
    await call(gate, "run_shell", tid, command="cp bin.dat copy.dat")
    after = await observed_tree(tmp_path, ws)
    assert after != before

    changes = await task_changes(astore.read, home, tid)
    got = {f.path: f.status for f in changes.files}
    assert got == {"new/deep/n.txt": "A", "a.txt": "M", "k.txt": "M", "sub/s.txt": "D", "d2/e/f.txt": "A",
                   "bin.dat": "M", "run.sh": "M", "link": "M", "copy.dat": "A"}
    by_path = {f.path: f for f in changes.files}
    assert (by_path["a.txt"].added, by_path["a.txt"].removed) == (1, 1)
    assert by_path["bin.dat"].added is None  # binary: no line counts
    assert (by_path["run.sh"].old_mode, by_path["run.sh"].new_mode) == ("100755", "100644")
    assert "noise.log" not in got  # the workspace's .gitignore is honoured

    await end(astore, tid)
    await restore(astore.read, astore.write, home, tid, "undo")
    assert await observed_tree(tmp_path, ws) == before
    assert not (ws / "d2").exists() and not (ws / "new").exists()  # directories it made, gone
    assert os.readlink(ws / "link") == "a.txt"
    assert os.access(ws / "run.sh", os.X_OK)
    assert (await task_changes(astore.read, home, tid)).state == "undone"

    await restore(astore.read, astore.write, home, tid, "redo")  # the undo, undone
    assert await observed_tree(tmp_path, ws) == after
    await restore(astore.read, astore.write, home, tid, "undo")
    assert await observed_tree(tmp_path, ws) == before
    assert dot_git(ws) == own_git  # the workspace's own repository never touched
    assert git(ws, "status", "--porcelain") == ""


@pytest.mark.timeout(120)
async def test_a_file_changed_after_the_task_blocks_the_undo(
        astore: AsyncStore, config: Config, home: Path, ws: Path) -> None:
    (ws / "a.txt").write_text("one\n")
    (ws / "b.txt").write_text("bee\n")
    gate = Gate(astore, config, home)
    first = await new_task(astore)
    await call(gate, "edit_file", first, path="a.txt", old="one", new="ONE")
    await call(gate, "edit_file", first, path="b.txt", old="bee", new="BEE")
    await end(astore, first)
    second = await new_task(astore, "later")
    await call(gate, "edit_file", second, path="b.txt", old="BEE", new="B!")  # another task since
    await end(astore, second)
    (ws / "a.txt").write_text("the person's own edit\n")  # and the person

    with pytest.raises(UndoRefused) as refused:
        await restore(astore.read, astore.write, home, first, "undo")
    message = str(refused.value)
    assert "a.txt: changed since (not by an agent's recorded call)" in message
    assert f"b.txt: changed since by dev in task {second}" in message
    assert (ws / "a.txt").read_text() == "the person's own edit\n"  # nothing touched
    assert (ws / "b.txt").read_text() == "B!\n"

    _, outcome = await restore(astore.read, astore.write, home, first, "undo", force=True)
    assert sorted(outcome.forced) == ["a.txt", "b.txt"]
    assert (ws / "a.txt").read_text() == "one\n"
    assert (ws / "b.txt").read_text() == "bee\n"


def test_a_file_over_the_cap_is_said_not_checkpointed_and_not_restored(home: Path, ws: Path) -> None:
    """Through the CLI end to end: the call that writes a big file and edits a small one;
    `changes` says plainly which was not checkpointed; `undo` restores the small one and
    names the big one as never checkpointed."""
    (home / "config.toml").write_text(config_text(ws, "[checkpoints]\nmax_file_mb = 0.004\n"))
    (ws / "small.txt").write_text("small\n")
    tid = ok(home, "send", "--to", "dev", "write things").strip()
    ok(home, "tool", "run", "dev", "write_file", json.dumps({"path": "big.txt", "content": "x" * 10_000}),
       "--task", tid)
    ok(home, "tool", "run", "dev", "edit_file", json.dumps({"path": "small.txt", "old": "small", "new": "SMALL"}),
       "--task", tid)
    shown = ok(home, "changes", tid)
    assert "M small.txt  +1 -1" in shown
    assert "not checkpointed: big.txt (over the 4 KiB file cap (10 KiB))" in shown
    as_json = json.loads(ok(home, "changes", tid, "--json"))
    assert [f["path"] for f in as_json["files"]] == ["small.txt"]
    assert [n["path"] for n in as_json["not_checkpointed"]] == ["big.txt"]

    refused = run(home, "undo", tid)  # still queued: its work may not be over
    assert refused.returncode != 0 and "still queued" in one_line_error(refused)
    ok(home, "cancel", tid)
    undone = ok(home, "undo", tid)
    assert "not restored, never checkpointed: big.txt" in undone
    assert (ws / "small.txt").read_text() == "small\n"
    assert (ws / "big.txt").exists()  # said so, not silently kept
    again = run(home, "undo", tid)
    assert again.returncode != 0 and f"redo {tid}" in one_line_error(again)
    assert "[undone]" in ok(home, "changes")


def test_bad_task_numbers_are_one_line_errors(home: Path, ws: Path) -> None:
    (home / "config.toml").write_text(config_text(ws))
    for args in (["undo", "999"], ["changes", "999"], ["redo", "999"]):
        proc = run(home, *args)
        assert proc.returncode != 0
        assert "task 999 does not exist" in one_line_error(proc)
    for args in (["redo", "x"], ["undo", "-1"], ["changes", "1.5"]):
        proc = run(home, *args)  # argparse's usage line, then the error naming the argument
        assert proc.returncode == 2 and "argument TASK: not a whole number" in proc.stderr


def test_an_unreadable_file_is_left_out_and_named(unprivileged_tmp: Path) -> None:
    """As a user who cannot read it (root can read anything): not recorded, and said."""
    ws, home = unprivileged_tmp / "ws", unprivileged_tmp / "home"

    def check() -> str:
        ws.mkdir()
        home.mkdir()
        (ws / "open.txt").write_text("fine\n")
        (ws / "closed.txt").write_text("secret\n")
        (ws / "closed.txt").chmod(0)
        snap = asyncio.run(ShadowRepo(home, ws, Limits()).snapshot())
        listed = asyncio.run(ShadowRepo(home, ws).entries(snap.tree, ["open.txt", "closed.txt"]))
        return json.dumps({"skipped": [(s.path, s.reason) for s in snap.skipped], "tree": sorted(listed)})

    answer = json.loads(as_unprivileged(check))
    assert answer == {"skipped": [["closed.txt", "unreadable"]], "tree": ["open.txt"]}


def test_the_home_inside_the_workspace_is_never_checkpointed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    home = ws / ".agentdeck"
    home.mkdir(parents=True)
    (ws / "a.txt").write_text("a\n")
    (home / "agentdeck.db").write_bytes(b"db")

    async def go() -> list[str]:
        repo = ShadowRepo(home, ws)
        snap = await repo.snapshot()
        return sorted(await repo.entries(snap.tree, ["a.txt", ".agentdeck/agentdeck.db"]))

    assert asyncio.run(go()) == ["a.txt"]


# --- kill -9 in the middle of an undo -------------------------------------------------

FILES = 300


def restore_row(db_path: Path, task_id: int) -> tuple[str, str] | None:
    """(kind, status) of the task's latest undo or redo, read-only, without waiting."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT kind, status FROM checkpoints WHERE task_id = ? AND kind != 'call' "
                           "ORDER BY id DESC LIMIT 1", (task_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], row[1])


def wait_for_running(proc: subprocess.Popen[bytes], db_path: Path, task_id: int, rows_before: int) -> bool:
    """Until the restore's row is written (True), or the process ended first (False)."""
    while proc.poll() is None:
        assert time_left() > 10, "the restore never started"
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            n = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE kind != 'call'").fetchone()[0]
        finally:
            conn.close()
        if n > rows_before:
            return True
        time.sleep(0.005)
    return False


@pytest.mark.timeout(600)
async def test_kill_9_during_an_undo_never_leaves_a_half_restored_file(
        astore: AsyncStore, config: Config, home: Path, ws: Path, db_path: Path) -> None:
    data = ws / "data"
    data.mkdir()
    old = {f"f{i:03}.txt": (f"old {i}\n" * 4000).encode() for i in range(FILES)}
    for name, content in old.items():
        (data / name).write_bytes(content)
    new = {name: content.replace(b"old", b"NEW") for name, content in old.items()}
    gate = Gate(astore, config, home)
    tid = await new_task(astore)
    await call(gate, "run_shell", tid, command="sed -i s/old/NEW/ " + " ".join(f"data/{n}" for n in old))
    await end(astore, tid)
    assert all((data / n).read_bytes() == new[n] for n in new)

    chance = random.Random(19)
    state = "changed"
    kills = 0
    for round_no in range(6):
        kind = "undo" if state == "changed" else "redo"
        rows_before = await astore.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM checkpoints WHERE kind != 'call'").fetchone()[0])
        proc = subprocess.Popen(agentdeck_cmd(kind, str(tid)), env=subprocess_env(home),  # noqa: ASYNC220
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started = await asyncio.to_thread(wait_for_running, proc, db_path, tid, rows_before)
        if started:
            await asyncio.sleep(chance.uniform(0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=time_left())
        proc.stderr.close()  # type: ignore[union-attr]
        # Every file is whole: as it was, or as the restore makes it; never a mix.
        for name in old:
            content = (data / name).read_bytes()
            assert content in (old[name], new[name]), f"round {round_no}: {name} half restored"
        # A second run completes it (or finds it already complete).
        row = restore_row(db_path, tid)
        if row is not None and row[1] == "running":
            finish = run(home, kind, str(tid))
            assert finish.returncode == 0, finish.stderr
            assert "completed the interrupted" in finish.stdout
        state = "undone" if kind == "undo" else "changed"
        want = old if state == "undone" else new
        assert all((data / n).read_bytes() == want[n] for n in want), f"round {round_no}: not complete"
        assert not [p for p in data.iterdir() if ".agentdeck-restore-" in p.name]  # no temp left
    assert kills >= 3  # most rounds were cut short mid-restore, not after it
