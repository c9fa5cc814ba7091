"""The command palette under Textual's pilot, on a real store: each command is chosen
the way a person chooses it (ctrl+p, type, enter) and acts through the connection's
control surface."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import AGENTS
from scripted_backend import ScriptedBackend, queued
from test_tui import SIZE, ask, config_for, notes, wait_for
from textual.command import CommandList, CommandPalette

from agents.protocol import OWNER
from agents.store import Store, queries
from agents.store import reducers as r
from app.connection import Attached, Embedded
from app.tui import make_app
from widgets.approval import ApprovalModal

pytestmark = pytest.mark.timeout(90)


async def choose(pilot, command: str) -> None:  # type: ignore[no-untyped-def]
    """Open the palette, type the command, and press enter once it is the top hit."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), within=5)
    await pilot.press(*command)
    hits = app.screen.query_one(CommandList)

    def top_hit() -> str:
        if hits.option_count == 0 or hits.highlighted != 0:
            return ""
        return str(hits.get_option_at_index(0).prompt).split("\n")[0]  # the name; its help below

    await wait_for(pilot, lambda: top_hit() == command, within=10)
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), within=5)


def head(app, agent: str) -> str:  # type: ignore[no-untyped-def]
    return str(app.deck_screen.panes[agent].query_one(".pane-head").render())


async def test_the_palette_pauses_and_resumes_an_agent(home: Path, db_path: Path, ws: Path) -> None:
    backend = ScriptedBackend(queued({}), step_s=0.01)
    app = make_app(Embedded(db_path, config_for(ws), backend), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "idle" in head(app, "dev"))
        await choose(pilot, "pause dev")
        # The loop says so when it next looks (within its heartbeat): the store, then the pane.
        await wait_for(pilot, lambda: "paused" in head(app, "dev"))
        assert app.connection.paused("dev") and not app.connection.paused("ops")
        assert "idle" in head(app, "ops")
        await choose(pilot, "resume dev")
        await wait_for(pilot, lambda: "idle" in head(app, "dev"))
        assert not app.connection.paused("dev")
        await pilot.press("ctrl+q")
    with Store.open(db_path, AGENTS) as store:
        states = [e.payload.status.state for e in store.read(queries.events_after, 0, 10_000)
                  if e.kind == "agent.status" and e.subject == "agent:dev"]
    assert "paused" in states and states.index("paused") < len(states) - 1  # and something after it


async def test_an_attached_cockpit_offers_pause_and_says_why_it_cannot(home: Path, db_path: Path,
                                                                       ws: Path) -> None:
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await choose(pilot, "pause dev")
        await wait_for(pilot, lambda: any("cannot pause dev from an attached cockpit" in n for n in notes(app)))
        assert [n.severity for n in app._notifications] == ["error"]


async def test_the_palette_cancels_a_task_and_its_subtasks(home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        parent = store.write(r.create_task, OWNER, "ship it", owner="lead")
        child = store.write(r.create_task, "lead", "write the notes", owner="dev", parent_id=parent.id)
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await choose(pilot, f"cancel task {parent.id}: ship it")
        await wait_for(pilot, lambda: f"cancelled task {parent.id} and 1 subtask(s)" in notes(app))
    with Store.open(db_path, AGENTS) as store:
        assert [store.read(queries.task, t.id).status for t in (parent, child)] == ["cancelled", "cancelled"]


async def test_the_palette_approves_an_approval(home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
        second = ask(store, "ops", "run_shell", {"command": "df -h"})
    app = make_app(Attached(db_path, config_for(ws)), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        for shown in (first, second):  # put both off: the palette decides, not the modal
            await wait_for(pilot, lambda s=shown: isinstance(app.screen, ApprovalModal)
                           and app.screen.approval.id == s)  # type: ignore[attr-defined]
            await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ApprovalModal))
        await choose(pilot, f"approve {second}: ops run_shell")
        await wait_for(pilot, lambda: f"approval {second} approved" in notes(app))
    with Store.open(db_path, AGENTS) as store:
        a, b = store.read(queries.approval, first), store.read(queries.approval, second)
    assert (b.status, b.scope, b.decided_by) == ("approved", "once", "user")
    assert a.status == "pending"
