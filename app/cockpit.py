"""The cockpit: agentdeck's TUI. It composes the widgets and presents the runtime; the
logic it shows lives in agents/ (the host, the deck, the reducers).

Live data is pulled, never pushed: one timer at `[ui] refresh_hz` reads the deck (each
agent's live view, the meter) and redraws only what changed; bus events arrive through
one bounded subscription and the log redraws at most once per tick.

The UI must not take the inference's CPU: when drawing costs the UI thread more than
UI_CPU_BUDGET of a core, frames are skipped (down to a quarter of the rate) until it
costs less. On 2 cores, five streams redrawn at 15 Hz cost the engine 40% of its speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Input, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from agents.errors import AgentdeckError
from agents.home import write_private_text
from agents.intake import read_request
from agents.protocol import OWNER, Approval, ApprovalScope, to_builtins
from agents.runtime.task_detail import task_detail
from agents.safe_text import safe_json, safe_text
from agents.store import EventFilter, queries
from agents.store import reducers as r
from app.connection import Connection
from themes import AGENTDECK, STYLESHEET, THEMES
from widgets.agent_pane import AgentPane
from widgets.approval import GRACE_S, ApprovalModal
from widgets.channels import DIRECT, Channels
from widgets.composer import Composer
from widgets.event_log import EventLog
from widgets.memory import MemoryBrowser
from widgets.meter import SlotMeter
from widgets.tasks import TaskView

SLOW_EVERY_S = 1.0  # tasks, channels and approvals are read at most this often
EVENT_QUEUE = 1024
SHUTDOWN_S = 15.0  # the crew's ordered stop, at most
UI_CPU_BUDGET = 0.2  # of one core, for the UI thread (drawing, reading the deck)
MOST_SKIPPED = 3  # frames skipped per frame drawn, at most: a quarter of refresh_hz
TAB_FOCUS = {"tasks": "#task-tree", "log": "#log-lines", "channels": "#channel-select",
             "memory": "#memory-query"}  # each tab's main widget, focused when the tab is shown


class Cockpit(App[int]):
    TITLE = "agentdeck"
    CSS_PATH = STYLESHEET
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "quit", id="app.quit", priority=True),
        # Priority: the F-keys work whatever has focus (a tree or an input would eat them).
        Binding("f7", "next_approval", "approvals", id="approvals.next", priority=True),
        Binding("f2", "maximize_pane", "maximize pane", id="pane.maximize", priority=True),
        Binding("f8", "focus_composer", "compose", id="composer.focus", priority=True),
        Binding("f3", "show_tab('tasks')", "tasks", id="tab.tasks", priority=True),
        Binding("f4", "show_tab('log')", "log", id="tab.log", priority=True),
        Binding("f5", "show_tab('channels')", "channels", id="tab.channels", priority=True),
        Binding("f6", "show_tab('memory')", "memory", id="tab.memory", priority=True),
    ]

    def __init__(self, connection: Connection, home: Path, *, grace_s: float = GRACE_S,
                 theme: str | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.connection = connection
        self.home = home
        self.config = connection.config
        self.agents = connection.agents
        self.grace_s = grace_s
        self.clock = clock  # wall time for countdowns and the header (snapshots fix it)
        self.register_theme(AGENTDECK)
        self.theme = theme or remembered_theme(home, self.config.ui.theme)
        self.panes: dict[str, AgentPane] = {}
        self.on_screen: int | None = None  # the approval in the modal
        self.later: set[int] = set()  # approvals the person put off (Esc)
        self.pending: list[Approval] = []
        self._last_slow = 0.0
        self._selected_task: int | None = None
        self._ticking = False
        self.stopping = False
        self._frames = 0
        self.skipping = 0  # frames skipped per frame drawn (adaptive)
        self._cpu_mark = (time.monotonic(), time.thread_time())

    # --- layout ---

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.clock is time.time)
        yield Static("", id="approval-badge")
        yield ProgressBar(total=1.0, show_eta=False, id="load-progress")
        with Horizontal(id="deck"):
            with Vertical(id="panes"):
                for name in self.agents:
                    pane = AgentPane(name, id=f"pane-{name}")
                    self.panes[name] = pane
                    yield pane
            with Vertical(id="side"):
                yield SlotMeter(id="meter")
                with TabbedContent(id="tabs", initial="tasks"):
                    with TabPane("tasks", id="tasks"):
                        yield TaskView(id="task-view")
                    with TabPane("log", id="log"):
                        yield EventLog(id="event-log")
                    with TabPane("channels", id="channels"):
                        yield Channels(["general", "agent-logs"], id="channels")
                    with TabPane("memory", id="memory"):
                        yield MemoryBrowser(id="memory")
        yield Composer(self.agents, id="composer")
        yield Footer()

    def on_mount(self) -> None:
        self.set_keymap(self.config.keymap)
        self.connection_worker = self.run_worker(self.connection.run(), name="connection",
                                                 exit_on_error=False)
        self.run_worker(self._follow_events(), name="events", exit_on_error=False)
        self.set_interval(1 / self.config.ui.refresh_hz, self._tick)
        self._main(Composer).focus()

    def _main(self, selector: Any, kind: Any = None) -> Any:
        """A widget of the main screen, also while a modal is on top."""
        if not self.screen_stack:  # torn down (exit) while a tick was reading
            raise NoMatches(f"no screen for {selector}")
        screen = self.screen_stack[0]
        return screen.query_one(selector) if kind is None else screen.query_one(selector, kind)

    # --- live data ---

    async def _tick(self) -> None:
        if self._ticking or self.stopping:
            return  # a slow read: skip a frame rather than pile them up
        self._frames += 1
        self._pace()
        if self._frames % (self.skipping + 1):
            return
        self._ticking = True
        try:
            await self._refresh()
        except NoMatches:
            pass  # the screen is being torn down (exit): nothing to draw on
        except RuntimeError:
            if not self.stopping:  # the store closed under a read while the crew stops
                raise
        except AgentdeckError as err:
            self.notify(safe_text(str(err)), severity="error")
        finally:
            self._ticking = False

    def _pace(self) -> None:
        """Once a second: skip more frames if the UI thread used more than its budget,
        fewer once it uses well under it."""
        wall, cpu = time.monotonic(), time.thread_time()
        elapsed = wall - self._cpu_mark[0]
        if elapsed < 1.0:
            return
        share = (cpu - self._cpu_mark[1]) / elapsed
        self._cpu_mark = (wall, cpu)
        if share > UI_CPU_BUDGET and self.skipping < MOST_SKIPPED:
            self.skipping += 1
        elif share < UI_CPU_BUDGET / 2 and self.skipping > 0:
            self.skipping -= 1

    async def _refresh(self) -> None:
        progress = self._main("#load-progress", ProgressBar)
        if not self.connection.ready.is_set():
            if self.connection.progress is not None:
                progress.update(progress=self.connection.progress)
            self._main(SlotMeter).show(None, time.monotonic(), self.connection.progress)
            return
        progress.display = False
        deck = await self.connection.deck()
        for view in deck.agents:
            await self.panes[view.name].show(view)
        self._main(SlotMeter).show(deck.meter, time.monotonic())
        self._main(EventLog).flush()
        now = time.monotonic()
        if now - self._last_slow >= SLOW_EVERY_S:
            self._last_slow = now
            await self._refresh_slow()

    async def _refresh_slow(self) -> None:
        store = self.connection.store
        assert store is not None
        self._main(TaskView).show(await store.read(queries.tasks))
        channels = self._main(Channels)
        if channels.selected == DIRECT:
            channels.show(await store.read(queries.direct_messages, OWNER))
        else:
            channels.show(await store.read(queries.messages, channels.selected))
        now = self.clock()
        # One past its time is over: the instance marks it expired on its next pass.
        self.pending = sorted((a for a in await store.read(queries.approvals, status="pending")
                               if a.expires_at > now), key=lambda a: a.id)
        if self.on_screen is not None and all(a.id != self.on_screen for a in self.pending):
            await self._gone(self.on_screen)
        self._show_badge()
        self._next_modal()

    async def _follow_events(self) -> None:
        await self.connection.ready.wait()
        assert self.connection.bus is not None and self.connection.store is not None
        last = await self.connection.store.read(queries.last_event_id)
        sub = await self.connection.bus.subscribe(None, EventFilter(), start=max(last - 200, 0),
                                                  maxsize=EVENT_QUEUE)
        log = self._main(EventLog)
        async for event in sub:
            log.add(event)  # drawn by the next tick, with everything else that came

    # --- approvals ---

    def _show_badge(self) -> None:
        badge = self._main("#approval-badge", Static)
        count = len(self.pending)
        badge.set_class(count > 0, "-shown")
        keys = self._key_for("approvals.next")
        badge.update(f"{count} approval(s) pending — {keys} to decide" if count else "")

    def _key_for(self, binding_id: str) -> str:
        keys = self.config.keymap.get(binding_id)
        if keys:
            return keys
        return next((b.key for b in self.BINDINGS if isinstance(b, Binding) and b.id == binding_id), "?")

    def _next_modal(self) -> None:
        if self.on_screen is not None:
            return  # a new approval never replaces the one on screen
        waiting = [a for a in self.pending if a.id not in self.later]
        if not waiting:
            return
        approval = waiting[0]
        self.on_screen = approval.id
        self.push_screen(ApprovalModal(approval, grace_s=self.grace_s, clock=self.clock),
                         lambda answer, a=approval: self._answered(a, answer))

    async def _gone(self, approval_id: int) -> None:
        """The approval on screen was decided elsewhere (`agentdeck approve`) or ran out of
        time: off the screen at once, so no key decides it again, and say what became of it."""
        modal = self.screen
        if not isinstance(modal, ApprovalModal) or modal.approval.id != approval_id:
            return  # something is on top of it (the palette): the next refresh tries again
        assert self.connection.store is not None
        now = await self.connection.store.read(queries.approval, approval_id)
        if now is None:
            said = f"approval {approval_id} is gone"
        elif now.status in ("pending", "expired"):
            said = f"approval {approval_id} expired"
        else:
            where = " in another terminal" if now.decided_by == "user" else ""
            by = f" by {now.decided_by}" if now.decided_by else ""
            said = f"approval {approval_id} {now.status}{by}{where}"
        if self.screen is modal:  # not answered by a key while the read was under way
            modal.dismiss("gone")
            self.notify(safe_text(said))

    def _answered(self, approval: Approval, answer: str | None) -> None:
        self.on_screen = None
        if answer == "gone":  # decided elsewhere or expired: nothing left to decide
            self._show_badge()
            return
        if answer in (None, "later", "goto"):
            self.later.add(approval.id)
            if answer == "goto" and approval.agent in self.panes:
                self.panes[approval.agent].focus()
            self._show_badge()
            return
        self._decide(approval, answer)

    @work(exit_on_error=False, group="decide")
    async def _decide(self, approval: Approval, answer: str) -> None:
        approve = answer != "deny"
        scopes: dict[str, ApprovalScope] = {"session": "session", "always": "always"}
        scope = scopes.get(answer, "once")
        try:
            await self.connection.decide(approval.id, approve, scope)
        except AgentdeckError as err:
            self.notify(safe_text(f"approval {approval.id}: {err}"), severity="error")
            return
        verb = "approved" if approve else "denied"
        self.notify(safe_text(f"approval {approval.id} {verb} ({scope}): {approval.agent} {approval.tool}"))
        self.pending = [a for a in self.pending if a.id != approval.id]
        self._show_badge()
        self._next_modal()

    def action_next_approval(self) -> None:
        if not self.pending:
            self.notify("no approvals pending")
            return
        self.later.discard(self.pending[0].id)
        self._next_modal()

    # --- composer and other actions ---

    @on(Input.Submitted, "#composer")
    async def _send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.connection.store is None:
            return
        composer = self._main(Composer)
        composer.remember(text)
        composer.value = ""
        try:
            request = read_request(text, self.agents)
            task = await self.connection.store.write(r.create_task, OWNER, request.title,
                                                     body=request.body, owner=request.owner)
        except AgentdeckError as err:
            self.notify(safe_text(str(err)), severity="error")
            return
        self.notify(safe_text(f"task {task.id} sent to {request.owner or 'the router'}"))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The main screen's F-keys are priority bindings; while a modal (an approval, the
        palette) is up they pass the key on to it instead."""
        if action in ("show_tab", "maximize_pane", "focus_composer"):
            return len(self.screen_stack) == 1
        return True

    def action_focus_composer(self) -> None:
        self._main(Composer).focus()

    def action_show_tab(self, tab: str) -> None:
        """Show the tab and focus what it is used through, so the keyboard alone reaches it."""
        self._main(TabbedContent).active = tab
        self._main(TAB_FOCUS[tab]).focus()

    def action_maximize_pane(self) -> None:
        focused = self.focused
        pane = next((p for p in self.panes.values() if focused is p or (focused and p in focused.ancestors)),
                    None)
        if pane is None:
            self.notify("focus an agent's pane first (click it, or Tab to it)")
            return
        maximized = pane.has_class("-maximized")
        for other in self.panes.values():
            other.remove_class("-maximized")
            other.display = True
        if not maximized:
            pane.add_class("-maximized")
            for other in self.panes.values():
                other.display = other is pane

    @on(TaskView.Selected)
    async def _task_selected(self, event: TaskView.Selected) -> None:
        self._selected_task = event.task_id
        store = self.connection.store
        if store is None:
            return
        text, steps = await store.read(task_detail, event.task_id)
        if self._selected_task == event.task_id:
            self._main(TaskView).show_detail(text, steps)

    @on(MemoryBrowser.Search)
    async def _search_memory(self, event: MemoryBrowser.Search) -> None:
        if self.connection.store is None or not event.query.strip():
            return
        found = await self.connection.store.read(queries.search_memory, event.query, agent=None, limit=50,
                                                 include_compacted=True)
        self._main(MemoryBrowser).show(found)

    def open_task(self, task_id: int) -> None:
        self.action_show_tab("tasks")
        self.post_message(TaskView.Selected(task_id))

    async def export_log(self) -> Path:
        store = self.connection.store
        assert store is not None
        events = await store.read(queries.events_after, 0, 1_000_000)
        folder = self.home / "exports"
        path = folder / time.strftime("log-%Y%m%d-%H%M%S.jsonl")
        lines = [safe_json({"id": e.id, "ts": e.ts, "kind": e.kind, "actor": e.actor, "subject": e.subject,
                            "payload": to_builtins(e.payload)}) for e in events]
        await asyncio.to_thread(_write_export, folder, path, "\n".join(lines) + "\n")
        return path

    # --- errors and themes ---

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures become notifications (never tracebacks)."""
        if event.state != WorkerState.ERROR:
            return
        err = event.worker.error
        what = str(err) if isinstance(err, AgentdeckError) else f"{type(err).__name__}: {err}"
        message = safe_text(what)
        if event.worker.name == "connection":  # the host could not start or stopped: nothing to show
            self.exit(1, message=f"agentdeck: {message}")
            return
        self.notify(message, title="error", severity="error", timeout=10)

    def watch_theme(self, theme: str) -> None:
        with contextlib.suppress(OSError):
            remember_theme(self.home, theme)

    async def _let_go(self) -> None:
        """Stop the crew in order (running steps recorded, the claim released) and wait
        until the connection has closed what it opened: a bus reader thread left behind
        keeps the process from exiting."""
        self.stopping = True
        # Embedded: the host's ordered stop ends its worker (a cancel could cut it short);
        # attached: run() lets go of the store and the bus.
        self.connection.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.closed.wait(), SHUTDOWN_S)

    async def on_unmount(self) -> None:
        await self._let_go()  # however the app ends

    async def action_quit(self) -> None:
        if self.connection.embedded:
            self.notify("stopping the crew…")
            await self._let_go()  # while the screen still shows it
        self.exit(0)


def _write_export(folder: Path, path: Path, text: str) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    write_private_text(path, text)


UI_STATE = "ui.json"


def remembered_theme(home: Path, configured: str) -> str:
    try:
        theme = json.loads((home / UI_STATE).read_text()).get("theme")
    except (OSError, ValueError, AttributeError):
        theme = None
    return theme if theme in THEMES else configured if configured in THEMES else "agentdeck"


def remember_theme(home: Path, theme: str) -> None:
    if theme in THEMES and home.is_dir():  # private like every file in the home (0600)
        write_private_text(home / UI_STATE, json.dumps({"theme": theme}))
