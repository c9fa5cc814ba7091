"""What a task changed on disk, in the cockpit: the task detail lists the files (and the
undo history), the agent's pane names them in one line, and the palette undoes and redoes
them. Real writes through the real gate into a real shadow repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import AGENTS
from test_tui import SIZE, notes, wait_for
from test_tui_palette import choose

from agents.checkpoints.changes import TaskChanges, task_changes
from agents.config import Config, parse_config
from agents.gate import Gate
from agents.protocol import OWNER
from agents.runtime.change_text import pane_line
from agents.runtime.change_watch import ChangeWatch
from agents.store import AsyncStore
from agents.store import reducers as r
from app.connection import Attached
from app.tui import make_app

pytestmark = pytest.mark.timeout(90)


def config_for(ws: Path) -> Config:
    return parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n\n'
                        '[[rules]]\nagent = "dev"\ntool = "write_file"\npattern = "**"\ndecision = "allow"\n')


async def write(gate: Gate, task_id: int, path: str, content: str) -> None:
    outcome = await gate.call("dev", "write_file", {"path": path, "content": content}, task_id=task_id)
    assert outcome.result.status == "ok", outcome.result.text


async def finished_task_that_rewrote(db_path: Path, home: Path, ws: Path, title: str) -> int:
    """A task of dev's that rewrote a.txt through the gate and is done; dev's status row
    still names it (what an agent's pane shows)."""
    store = await AsyncStore(db_path, AGENTS).open()
    try:
        task = await store.write(r.create_task, OWNER, title, owner="dev")
        await write(Gate(store, config_for(ws), home), task.id, "a.txt", "new\nlines\n")
        await store.write(r.set_task_status, "dev", task.id, "active")
        await store.write(r.set_task_status, "dev", task.id, "done", "rewrote a.txt")
        await store.write(r.set_agent_status, "dev", "dev", "idle", task_id=task.id)
        return task.id
    finally:
        await store.close()


def changes_shown(app) -> str:  # type: ignore[no-untyped-def]
    return app.deck_screen.query_one("#task-view").change_text


def pane_shown(app, agent: str) -> str:  # type: ignore[no-untyped-def]
    pane = app.deck_screen.panes[agent]
    shown = pane.query_one(".pane-changes")
    return str(shown.render()) if shown.display else ""


async def test_the_detail_and_the_pane_show_a_tasks_changes_and_the_palette_undoes_and_redoes_them(
        home: Path, db_path: Path, ws: Path) -> None:
    (ws / "a.txt").write_text("old\n")
    tid = await finished_task_that_rewrote(db_path, home, ws, "rewrite a.txt")
    assert (ws / "a.txt").read_text() == "new\nlines\n"
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await wait_for(pilot, lambda: pane_shown(app, "dev") == "changed: a.txt (+2 -1)")
        assert all(pane_shown(app, a) == "" for a in AGENTS if a != "dev")  # they changed nothing

        app.deck_screen.open_task(tid)
        await wait_for(pilot, lambda: "M a.txt  +2 -1" in changes_shown(app))
        assert f"#{tid} dev " in changes_shown(app) and "1 file(s) +2 -1" in changes_shown(app)
        assert "undone" not in changes_shown(app)

        await choose(pilot, f"undo task {tid}'s changes")
        await wait_for(pilot, lambda: (ws / "a.txt").read_text() == "old\n")
        await wait_for(pilot, lambda: "[undone]" in changes_shown(app))
        assert f"undo of task {tid}: 1 file(s) restored" in notes(app)[-1]
        assert "undo 2 done" in changes_shown(app)  # the history: checkpoint 2 is the undo
        await wait_for(pilot, lambda: pane_shown(app, "dev") == "undone: a.txt (+2 -1)")

        await choose(pilot, f"redo task {tid}'s changes")
        await wait_for(pilot, lambda: (ws / "a.txt").read_text() == "new\nlines\n")
        await wait_for(pilot, lambda: "redo 3 done" in changes_shown(app))
        assert "[undone]" not in changes_shown(app)
        assert [n.severity for n in app._notifications] == ["information", "information"]
        await pilot.press("ctrl+q")


async def test_an_undo_over_someone_elses_change_is_refused_and_says_why(home: Path, db_path: Path,
                                                                        ws: Path) -> None:
    (ws / "a.txt").write_text("old\n")
    tid = await finished_task_that_rewrote(db_path, home, ws, "rewrite a.txt")
    (ws / "a.txt").write_text("a person's edit\n")  # after the task, not through the gate
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        app.deck_screen.open_task(tid)
        await wait_for(pilot, lambda: "M a.txt" in changes_shown(app))
        await choose(pilot, f"undo task {tid}'s changes")
        await wait_for(pilot, lambda: bool(app._notifications))
        assert [n.severity for n in app._notifications] == ["error"]
        assert f"undo of task {tid} refused, nothing changed: a.txt: changed since" in notes(app)[0]
        assert (ws / "a.txt").read_text() == "a person's edit\n"
        assert "[undone]" not in changes_shown(app)
        await pilot.press("ctrl+q")


async def test_the_watch_runs_git_again_only_after_a_new_checkpoint(home: Path, db_path: Path,
                                                                    ws: Path) -> None:
    (ws / "a.txt").write_text("old\n")
    store = await AsyncStore(db_path, AGENTS).open()
    try:
        gate = Gate(store, config_for(ws), home)
        task = await store.write(r.create_task, OWNER, "write things", owner="dev")
        watch = ChangeWatch(home)
        first = (await watch.read(store.read, [task.id]))[task.id].changes
        assert first is not None and first.files == [] and watch.worked_out == 1
        await write(gate, task.id, "a.txt", "one\n")
        for _ in range(3):  # refreshes with nothing new: the same answer, no git
            seen = (await watch.read(store.read, [task.id]))[task.id].changes
            assert seen is not None and [f.path for f in seen.files] == ["a.txt"]
        assert watch.worked_out == 2
        sub = await store.write(r.create_task, "dev", "and more", owner="dev", parent_id=task.id)
        assert watch.worked_out == 2
        await write(gate, sub.id, "b.txt", "two\n")  # a subtask's checkpoint is news too
        seen = (await watch.read(store.read, [task.id]))[task.id].changes
        assert seen is not None and [f.path for f in seen.files] == ["a.txt", "b.txt"]
        assert watch.worked_out == 3
        assert await watch.read(store.read, [999]) == {}  # no such task: nothing, no git
        assert watch.worked_out == 3
    finally:
        await store.close()


async def test_the_pane_line_fits_the_width_and_counts_what_it_leaves_out(home: Path, db_path: Path,
                                                                        ws: Path) -> None:
    store = await AsyncStore(db_path, AGENTS).open()
    try:
        gate = Gate(store, config_for(ws), home)
        task = await store.write(r.create_task, OWNER, "write things", owner="dev")
        for name in ("alpha.txt", "beta.txt", "gamma\x1b[2J.txt"):
            await write(gate, task.id, name, "x\ny\n")
        changes: TaskChanges = await task_changes(store.read, home, task.id)
    finally:
        await store.close()
    # The escape is shown as text, never sent to the terminal.
    assert pane_line(changes, 200) == "changed: alpha.txt, beta.txt, gamma\\x1b[2J.txt (+6 -0)"
    assert pane_line(changes, 40) == "changed: alpha.txt … 2 more (+6 -0)"
    assert pane_line(changes, 20) == "changed: 3 file(s) …"
    assert all(len(pane_line(changes, w)) <= w for w in range(1, 80))
