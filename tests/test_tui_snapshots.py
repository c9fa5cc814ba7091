"""SVG snapshots of the cockpit (pytest-textual-snapshot) at a fixed size, with
deterministic data: an attached cockpit on a prepared store, a fixed clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import AGENTS

from agents.config import parse_config
from agents.protocol import OWNER
from agents.store import Store, queries
from agents.store import reducers as r
from app.connection import Attached
from app.tui import make_app

SIZE = (160, 48)
NOW = 1_800_000_000.0


def prepared(db_path: Path, ws: Path, *, approval: bool = False):  # type: ignore[no-untyped-def]
    with Store.open(db_path, AGENTS) as store:
        root = store.write(r.create_task, OWNER, "ship the release notes", owner="lead")
        child = store.write(r.create_task, "lead", "draft the changelog", owner="dev", parent_id=root.id)
        store.write(r.set_task_status, "dev", child.id, "active")
        store.write(r.set_task_status, "dev", child.id, "done", "wrote CHANGELOG.md")
        store.write(r.create_task, OWNER, "how full is the disk?", owner="ops")
        if approval:
            store.write(r.request_approval, "dev", "run_shell", {"command": "make release"},
                        "make release", "to build the release", timeout_s=600, always_rule="make release",
                        ask_reason="no rule allows it")
    config = parse_config(f'workspace = "{ws}"\nschedules = []\n')
    return config


def app_for(db_path: Path, home: Path, ws: Path, *, approval: bool = False):  # type: ignore[no-untyped-def]
    config = prepared(db_path, ws, approval=approval)
    with Store.open(db_path, AGENTS) as store:
        pending = store.read(queries.approvals, status="pending")
    expires = pending[0].expires_at if pending else NOW
    # A clock that reads 300 s before the approval expires: the countdown is fixed.
    return make_app(Attached(db_path, config), home, grace_s=0.0, clock=lambda: expires - 300)


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    pilot.app.screen_stack[0].query_one("#composer").cursor_blink = False  # a blink is not a change
    app = pilot.app
    deadline = asyncio.get_running_loop().time() + 10
    while not app.deck_screen.last_slow and asyncio.get_running_loop().time() < deadline:
        await pilot.pause(0.05)
    assert app.deck_screen.last_slow, "the first slow refresh (tasks, approvals) never came"
    await pilot.pause(0.2)  # what it read is drawn on the frames that follow it
    await pilot.wait_for_scheduled_animations()


def test_main_screen(snap_compare, db_path: Path, home: Path, ws: Path) -> None:
    assert snap_compare(app_for(db_path, home, ws), terminal_size=SIZE, run_before=settle)


def test_approval_modal(snap_compare, db_path: Path, home: Path, ws: Path) -> None:
    assert snap_compare(app_for(db_path, home, ws, approval=True), terminal_size=SIZE, run_before=settle)


def test_task_tree_with_a_task_selected(snap_compare, db_path: Path, home: Path, ws: Path) -> None:
    async def select(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.click("#task-tree")
        await pilot.press("down")
        await pilot.pause(0.5)

    assert snap_compare(app_for(db_path, home, ws), terminal_size=SIZE, run_before=select)
