"""The cockpit under Textual's pilot: scripted backend (embedded) or a prepared store
(attached), one factory (`make_app`) for both, as for the screenshots."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path

import msgspec
import pytest
from helpers import AGENTS
from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
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
        assert len(app.query(SlotMeter)) == 1
        await pilot.press(*"@dev check the build", "enter")
        await wait_for(pilot, lambda: "the build is green" in app.deck_screen.panes["dev"].shown_text)
        assert all("the build is green" not in app.deck_screen.panes[a].shown_text for a in AGENTS if a != "dev")
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
        mark = app.deck_screen.last_slow
        await wait_for(pilot, lambda: app.deck_screen.last_slow > mark, within=5)  # a refresh of approvals came and went
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


# --- approvals decided elsewhere, private ui state, the task detail, the keyboard ---


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(n.message) for n in app._notifications]


async def test_an_approval_decided_in_another_terminal_leaves_the_screen_and_says_so(
        home: Path, db_path: Path, ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
    app = make_app(Attached(db_path, config_for(ws)), home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        with Store.open(db_path, AGENTS) as store:  # `agentdeck approve 1`, another process
            store.write(r.decide_approval, OWNER, first, True)
        await wait_for(pilot, lambda: not isinstance(app.screen, ApprovalModal), within=5)
        await wait_for(pilot, lambda: f"approval {first} approved by user in another terminal" in notes(app))
        await pilot.press("n")  # what would have denied it: now it decides nothing, and no error
        mark = app.deck_screen.last_slow
        await wait_for(pilot, lambda: app.deck_screen.last_slow > mark, within=5)  # a slow refresh came and went
        assert not isinstance(app.screen, ApprovalModal)
        assert not [n for n in app._notifications if n.severity == "error"], notes(app)
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.approval, first).status == "approved"


async def test_a_failure_in_a_deck_worker_becomes_one_error_notification(home: Path, db_path: Path,
                                                                           ws: Path) -> None:
    """The deck screen's workers report to the App's on_worker_state_changed (a worker's
    state does not bubble from the screen that started it)."""
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
    connection = Attached(db_path, config_for(ws))

    async def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("the store went away")

    connection.decide = broken  # type: ignore[method-assign]
    app = make_app(connection, home, grace_s=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        await pilot.press("y")
        await wait_for(pilot, lambda: "ValueError: the store went away" in notes(app), within=5)
        assert [n.severity for n in app._notifications] == ["error"]
    with Store.open(db_path, AGENTS) as store:
        assert store.read(queries.approval, first).status == "pending"


async def test_an_approval_past_its_time_leaves_the_screen_as_expired(home: Path, db_path: Path,
                                                                      ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        first = ask(store, "dev", "read_file", {"path": "a.txt"})
        expires = store.read(queries.approval, first).expires_at
    now = [expires - 300]
    app = make_app(Attached(db_path, config_for(ws)), home, grace_s=0.0, clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalModal))
        now[0] = expires + 1  # nobody has marked it expired yet: its time alone ends it
        await wait_for(pilot, lambda: not isinstance(app.screen, ApprovalModal), within=5)
        await wait_for(pilot, lambda: f"approval {first} expired" in notes(app))
        assert "0 approval" not in str(app.query_one("#approval-badge").render())
        assert not app.deck_screen.approvals.pending


async def test_the_remembered_theme_file_is_private_whatever_the_umask(home: Path, db_path: Path,
                                                                        ws: Path) -> None:
    old = os.umask(0o022)  # a usual umask: a plain write would leave ui.json 0644
    try:
        app = make_app(Attached(db_path, config_for(ws)), home)
        async with app.run_test(size=SIZE) as pilot:
            app.theme = "textual-light"
            await pilot.pause(0.1)
    finally:
        os.umask(old)
    assert json.loads((home / "ui.json").read_text()) == {"theme": "textual-light"}
    assert stat.S_IMODE((home / "ui.json").stat().st_mode) == 0o600


def detail_text(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.query_one("#task-detail-text").render())


async def test_a_task_with_a_megabyte_result_shows_a_capped_detail_and_steps_on_demand(
        home: Path, db_path: Path, ws: Path) -> None:
    from agents.protocol import AgentStepped
    from agents.runtime.task_detail import DETAIL_CHARS

    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "dump everything", owner="dev")
        store.write(r.set_task_status, "dev", task.id, "active")
        for n in range(1, 4):
            store.write(r.record_phase, "dev", AgentStepped(task_id=task.id, step=n, tool="read_file",
                                                            decision="allow", status="ok",
                                                            summary="x" * 100_000))
        store.write(r.set_task_status, "dev", task.id, "done", "y" * 1_000_000)
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        app.deck_screen.open_task(task.id)
        await wait_for(pilot, lambda: "dump everything" in detail_text(app))
        shown = detail_text(app)
        assert len(shown) < DETAIL_CHARS + 1000
        assert f"… {1_000_000 - DETAIL_CHARS} more characters (agentdeck tasks --json)" in shown
        steps = app.query_one("#task-steps-text")
        assert str(steps.render()) == ""  # not drawn until asked for
        app.query_one("#task-steps").collapsed = False
        await wait_for(pilot, lambda: "step 3: read_file" in str(steps.render()))
        assert len(str(steps.render())) < 1000  # each line shortened


def test_task_steps_read_as_lines_not_json(db_path: Path) -> None:
    from agents.protocol import AgentReflected, AgentStepped, AgentTriaged
    from agents.runtime.task_detail import task_detail

    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "check the disk", owner="ops")
        store.write(r.set_task_status, "ops", task.id, "active")
        store.write(r.record_phase, "ops", AgentTriaged(task_id=task.id, action="act", reason="mine"))
        store.write(r.record_phase, "ops", AgentStepped(task_id=task.id, step=1, tool="run_shell",
                                                        decision="ask", status="ok", summary="df -h /"))
        store.write(r.record_phase, "ops", AgentStepped(task_id=task.id, step=2, tool=None, decision=None,
                                                        status="final", summary="42% used"))
        store.write(r.record_phase, "ops", AgentReflected(task_id=task.id, outcome="success",
                                                          lesson="df answers it", importance=2,
                                                          memory_id=None))
        _, steps = store.read(task_detail, task.id)
    # The log's one description of a step (event_text.phase_text), with its words after it.
    assert steps == ["triage: act: mine", "step 1: run_shell (ask) ok: df -h /",
                     "step 2: answer final: 42% used", "reflected: success, importance 2: df answers it"]


async def test_f3_to_f6_show_and_focus_each_tab_and_the_tree_selects_by_keyboard(
        home: Path, db_path: Path, ws: Path) -> None:
    from textual.widgets import TabbedContent

    with Store.open(db_path, AGENTS) as store:
        store.write(r.create_task, OWNER, "first task", owner="dev")
        store.write(r.create_task, OWNER, "second task", owner="ops")
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.query_one("#task-tree").root.children) == 2)
        tabs = app.query_one(TabbedContent)
        for key, tab, widget in (("f4", "log", "log-lines"), ("f5", "channels", "channel-select"),
                                 ("f6", "memory", "memory-query"), ("f3", "tasks", "task-tree")):
            await pilot.press(key)  # from whatever the last one focused (an input, a select, a log)
            await wait_for(pilot, lambda t=tab, w=widget: tabs.active == t and app.focused is not None
                           and app.focused.id == w, within=5)
        await pilot.press("down")
        await wait_for(pilot, lambda: "#1 first task" in detail_text(app), within=5)
        await pilot.press("down")
        await wait_for(pilot, lambda: "#2 second task" in detail_text(app), within=5)
        await pilot.click("#task-tree")  # after a click, the F-keys still work
        await pilot.press("f4")
        await wait_for(pilot, lambda: tabs.active == "log" and app.focused.id == "log-lines", within=5)
        await pilot.press("f8")
        await wait_for(pilot, lambda: app.focused.id == "composer", within=5)


def test_the_pane_head_shows_the_phase_once_its_age_and_the_step() -> None:
    from agents.runtime.deck import AgentView
    from widgets.agent_pane import head_text

    base = {"name": "dev", "health": "green", "task_id": 1, "task_title": "t", "text": "", "call": "c",
            "fed": 0, "last_tool": None, "last_tool_outcome": "", "tokens_per_s": 0.0, "detail": ""}
    triage = AgentView(**base, state="triage", phase="triage", phase_started=100.0)
    assert head_text(triage, 117.4).plain == "● dev  ◇ triage · 17s"
    act = AgentView(**base, state="acting", phase="step 2", step=2, max_steps=8, phase_started=100.0)
    assert head_text(act, 103.0).plain == "● dev  ▶ act · step 2/8 · 3s"
    idle = AgentView(**base, state="idle", phase="")
    assert head_text(idle, 103.0).plain == "● dev  ○ idle"


async def test_the_deck_carries_step_note_and_phase_age_to_the_pane(db_path: Path) -> None:
    from textual.app import App

    from agents.crew.live import LiveView
    from agents.runtime.deck import read_deck
    from agents.store import AsyncStore

    live = LiveView(agent="dev", state="acting", task_id=None)
    live.begin_call("step 2")
    live.step, live.max_steps, live.note = 2, 8, "retrying: the output did not parse \x1b[2J"
    store = AsyncStore(db_path, list(AGENTS))
    await store.open()
    try:
        deck = await read_deck(store, list(AGENTS), live={"dev": live})
    finally:
        await store.close()
    view = next(v for v in deck.agents if v.name == "dev")
    assert (view.step, view.max_steps, view.phase_started) == (2, 8, live.call_started)

    class One(App[None]):
        def compose(self):  # type: ignore[no-untyped-def]
            yield AgentPane("dev")

    app = One()
    async with app.run_test() as pilot:
        pane = app.query_one(AgentPane)
        await pane.show(view, now=live.call_started + 17)
        await pilot.pause()
        head = str(pane.query_one(".pane-head").render())
        tool = str(pane.query_one(".pane-tool").render())
    assert "step 2/8 · 17s" in head
    assert tool == "⟳ retrying: the output did not parse \\x1b[2J"


def test_no_reason_given_shows_no_agent_says_line() -> None:
    from agents.protocol import Approval
    from agents.runtime.approval_text import approval_lines

    a = Approval(id=1, agent="dev", task_id=None, tool_call_id=None, tool="read_file", arguments={},
                 resolved="/x", reason="", status="pending", decided_by=None, scope=None, created_at=0.0,
                 expires_at=60.0, decided_at=None)
    assert not [line for line in approval_lines(a, 0.0) if "agent says" in line]
    said = approval_lines(msgspec.structs.replace(a, reason="to read it"), 0.0)
    assert "  agent says:  'to read it'  (the model's words)" in said


# --- the panes maximized, the memory and channels tabs ---


async def test_f2_maximizes_the_focused_pane_and_f2_again_restores_it(home: Path, db_path: Path,
                                                                      ws: Path) -> None:
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        ops = app.deck_screen.panes["ops"]
        before = ops.region.height
        await pilot.click("#pane-ops")
        await wait_for(pilot, lambda: app.focused is not None and (app.focused is ops or ops in app.focused.ancestors),
                       within=5)
        await pilot.press("f2")
        await wait_for(pilot, lambda: ops.region.height > before, within=5)
        assert ops.has_class("-maximized")
        assert [name for name, pane in app.deck_screen.panes.items() if pane.display] == ["ops"]
        await pilot.press("f2")
        await wait_for(pilot, lambda: ops.region.height == before, within=5)
        assert not ops.has_class("-maximized")
        assert all(pane.display and pane.region.height > 0 for pane in app.deck_screen.panes.values())


async def test_the_memory_tab_finds_a_memory_written_through_the_reducer(home: Path, db_path: Path,
                                                                         ws: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        store.write(r.write_memory, "ops", "the backup disk is /dev/sdb", tags=["disk"], importance=4)
        store.write(r.write_memory, "dev", "tests run with make test")
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await pilot.press("f6")
        await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "memory-query", within=5)
        await pilot.press(*"backup", "enter")
        results = app.query_one("#memory-results")
        await wait_for(pilot, lambda: "the backup disk is /dev/sdb" in str(results.render()), within=5)
        shown = str(results.render())
        assert "ops (private fact, importance 4)" in shown and "make test" not in shown


async def test_the_channels_tab_shows_a_message_posted_to_general(home: Path, db_path: Path,
                                                                  ws: Path) -> None:
    app = make_app(Attached(db_path, config_for(ws)), home)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.connection.ready.is_set)
        await pilot.press("f5")
        text = app.query_one("#channel-text")
        await wait_for(pilot, lambda: app.deck_screen.last_slow > 0, within=5)  # a refresh read the channel empty
        assert "the build is green" not in str(text.render())
        with Store.open(db_path, AGENTS) as store:  # another process posts while the tab is shown
            store.write(r.post_message, "dev", "general", "the build is green")
        await wait_for(pilot, lambda: "dev: the build is green" in str(text.render()), within=5)


@pytest.mark.timeout(20)
def test_a_fifo_or_a_huge_file_as_the_remembered_theme_is_refused_not_waited_on(home: Path) -> None:
    from app.cockpit import remembered_theme

    home.mkdir(parents=True, exist_ok=True)
    (home / "ui.json").write_text('{"theme": "textual-light"}')
    assert remembered_theme(home, "agentdeck") == "textual-light"  # the file is read when sound
    (home / "ui.json").unlink()
    os.mkfifo(home / "ui.json")  # a plain open() would block here until a writer came
    assert remembered_theme(home, "textual-light") == "textual-light"
    (home / "ui.json").unlink()
    (home / "ui.json").write_text('{"theme": "textual-dark"}' + " " * 10_000)
    assert remembered_theme(home, "agentdeck") == "agentdeck"
