"""The cockpit under Textual's pilot: scripted backend (embedded) or a prepared store
(attached), one factory (`make_app`) for both, as for the screenshots."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import AGENTS

from agents.config import parse_config
from agents.inference.scripted import ScriptedBackend, queued
from agents.protocol import OWNER
from agents.store import Store, queries
from agents.store import reducers as r
from app.connection import Attached, Embedded
from app.tui import check_ui_config, make_app
from widgets.agent_pane import AgentPane
from widgets.approval import GRACE_S, ApprovalModal
from widgets.meter import SlotMeter

SIZE = (160, 48)
HOSTILE = "rm -rf ~ \x1b[2J\x1b]0;pwned\x07 \u202egnp.exe"


def config_for(ws: Path):  # type: ignore[no-untyped-def]
    return parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n')


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    return w


async def wait_for(pilot, check, within: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def ask(store: Store, agent: str, tool: str, arguments: dict, reason: str = "I need it") -> int:
    return store.write(r.request_approval, agent, tool, arguments, f"resolved {tool}", reason,
                       timeout_s=600, always_rule="cat *").id


# --- the main screen, embedded ---


async def test_main_screen_has_five_panes_and_a_meter_and_streams_into_the_right_pane(
        home: Path, db_path: Path, ws: Path) -> None:
    answer = "the build is green " * 12
    outputs = {"dev": ['{"action": "act", "reason": "mine"}', '{"final": "' + answer + '"}',
                       '{"outcome": "success", "lesson": "builds", "importance": 2, "tags": []}']}
    backend = ScriptedBackend(queued(outputs), step_s=0.01)
    app = make_app(Embedded(db_path, config_for(ws), backend), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        assert [p.agent for p in app.query(AgentPane)] == list(AGENTS)
        assert app.query_one(SlotMeter) is not None
        await pilot.press(*"@dev check the build", "enter")
        await wait_for(pilot, lambda: "the build is green" in app.panes["dev"].shown_text)
        assert all("the build is green" not in app.panes[a].shown_text for a in AGENTS if a != "dev")
        with Store.open(db_path, AGENTS) as store:
            task = store.read(queries.tasks)[-1]
        assert (task.owner, task.title, task.body) == ("dev", "check the build", "@dev check the build")
        await pilot.press("ctrl+q")


async def test_composer_completes_agent_names_and_remembers_history(home: Path, db_path: Path,
                                                                    ws: Path) -> None:
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await pilot.press(*"@sc")
        await pilot.pause(0.2)
        await pilot.press("right")  # accept the suggestion
        composer = app.query_one("#composer")
        assert composer.value == "@scribe "
        await pilot.press(*"what happened", "enter")
        await pilot.press("up")
        assert composer.value == "@scribe what happened"
        await pilot.press("down")
        assert composer.value == ""
        with Store.open(db_path, AGENTS) as store:
            assert [t.owner for t in store.read(queries.tasks)] == ["scribe"]


# --- approvals ---


async def test_approval_modal_y_approves_n_denies_in_order_and_early_keys_are_ignored(
        home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
        second = ask(store, "ops", "run_shell", {"command": "df -h"})
    assert GRACE_S == 0.3  # the product's grace; a longer one here keeps a loaded machine from racing it
    grace = 2.0
    app = make_app(Attached(db_path, config_for(ws)), home, grace_s=grace)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        assert app.screen.approval.id == first  # type: ignore[attr-defined]
        await pilot.press("y")  # within the grace of the modal appearing: ignored
        await pilot.pause(0.05)
        with Store.open(db_path, AGENTS) as store:
            assert store.read(queries.approval, first).status == "pending"
        await pilot.pause(grace)
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal)
                       and app.screen.approval.id == second)  # type: ignore[attr-defined]
        await pilot.pause(grace)
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ApprovalModal))
        with Store.open(db_path, AGENTS) as store:
            a, b = store.read(queries.approval, first), store.read(queries.approval, second)
        assert (a.status, a.scope, a.decided_by) == ("approved", "once", "user")
        assert b.status == "denied"


async def test_escape_leaves_it_pending_with_a_badge_and_a_new_one_never_replaces_the_shown_one(
        home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
    app = make_app(Attached(db_path, config_for(ws)), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        with Store.open(db_path, AGENTS) as store:
            second = ask(store, "review", "read_file", {"path": "b.txt"})
        await pilot.pause(1.3)  # a refresh of approvals came and went
        assert app.screen.approval.id == first  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal)
                       and app.screen.approval.id == second)  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ApprovalModal))
        badge = app.query_one("#approval-badge")
        await wait_for(pilot, lambda: "2 approval(s) pending" in str(badge.render()))
        with Store.open(db_path, AGENTS) as store:
            assert [a.id for a in store.read(queries.approvals, status="pending")] == [first, second]
        await pilot.press("f7")  # decide now: the first comes back
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal)
                       and app.screen.approval.id == first)  # type: ignore[attr-defined]


async def test_a_hostile_approval_is_shown_escaped(home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        ask(store, "dev", "run_shell", {"command": HOSTILE}, reason=f"trust me {HOSTILE}")
    app = make_app(Attached(db_path, config_for(ws)), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        shown = "\n".join(str(w.render()) for w in app.screen.query("Static"))
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "\\u202e" in shown
    assert "(the model's words)" in shown


def test_a_bad_theme_or_keymap_id_is_one_line_error(ws: Path) -> None:
    from agents.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ui\.theme: unknown theme 'neon'"):
        check_ui_config(parse_config('[ui]\ntheme = "neon"\n'))
    with pytest.raises(ConfigError, match="keymap: unknown binding id 'nope'"):
        check_ui_config(parse_config('[keymap]\nnope = "x"\n'))
    check_ui_config(parse_config('[keymap]\n"approval.once" = "Y"\n'))


async def test_keymap_remaps_a_binding(home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
    config = parse_config(f'workspace = "{ws}"\nschedules = []\n[keymap]\n"approval.once" = "o"\n')
    app = make_app(Attached(db_path, config), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        await pilot.press("o")
        await wait_for(pilot, lambda: not isinstance(app.screen, ApprovalModal))
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.approval, first).status == "approved"


async def test_a_thousand_events_redraw_the_log_a_few_times_not_a_thousand(home: Path, db_path: Path,
                                                                             ws: Path) -> None:
    from widgets.event_log import EventLog

    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await pilot.pause(0.3)
        log = app.query_one(EventLog)
        before = log.redraws
        with Store.open(db_path, AGENTS) as store:
            for i in range(1000):
                store.write(r.post_message, OWNER, "general", f"burst {i}")
        await wait_for(pilot, lambda: any("burst 999" in str(e.payload) for e in log.events))
        await pilot.pause(0.3)
        # Drawn once per tick with whatever came, not once per event.
        assert log.redraws - before <= 100, log.redraws - before


async def test_the_theme_picked_is_remembered(home: Path, db_path: Path, ws: Path) -> None:
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "agentdeck"
        app.theme = "textual-light"
        await pilot.pause(0.1)
    again = make_app(Attached(db_path, config_for(ws)), home)
    assert again.theme == "textual-light"
    await asyncio.sleep(0)
