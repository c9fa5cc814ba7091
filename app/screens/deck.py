"""The deck: the cockpit's one main screen (as Posting's MainScreen). It owns the
layout, the keys, the timer that draws the runtime, the approval modals (and the review
of MCP tools withheld until approved) and the composer; the App around it holds the
connection, the theme and quitting.

Live data is pulled, never pushed: one timer at `[ui] refresh_hz` reads the deck (each
agent's live view, the meter) and redraws only what changed; bus events arrive through
one bounded subscription and the log redraws at most once per tick. The timer skips
frames when drawing costs more CPU than its budget (agents/runtime/pacing.py). The files
a task changed (the panes' tasks, the selected one) are read on the slow refresh, off
the tick, and worked out again (git) only when a new checkpoint says they changed.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, ProgressBar, Static, TabbedContent, TabPane

from agents.errors import AgentdeckError
from agents.inference.meter import MeterSnapshot
from agents.intake import read_request
from agents.notify.alerts import TerminalAlerts
from agents.notify.text import Note, in_quiet_hours, terminal_alert
from agents.protocol import OWNER, Approval, McpTool
from agents.runtime import ledger
from agents.runtime.approval_queue import ApprovalQueue, decision_for, what_became_of
from agents.runtime.change_text import change_lines, worth_showing
from agents.runtime.change_watch import ChangeWatch, Watched
from agents.runtime.mcp_text import withheld_by_server, withheld_summary
from agents.runtime.pacing import FramePacer
from agents.runtime.task_detail import task_detail
from agents.safe_text import safe_text
from agents.store import EventFilter, queries
from agents.store import reducers as r
from agents.store.reducers.notifications import record_notification
from app.connection import Connection
from widgets.agent_pane import AgentPane
from widgets.approval import GRACE_S, ApprovalModal
from widgets.channels import DIRECT, Channels
from widgets.composer import Composer
from widgets.event_log import EventLog
from widgets.mcp_review import McpReviewModal
from widgets.memory import MemoryBrowser
from widgets.meter import SlotMeter
from widgets.tasks import TaskView

SLOW_EVERY_S = 1.0  # tasks, channels and approvals are read at most this often
EVENT_QUEUE = 1024
TAB_FOCUS = {"tasks": "#task-tree", "log": "#log-lines", "channels": "#channel-select",
             "memory": "#memory-query"}  # each tab's main widget, focused when the tab is shown


class DeckScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        # Also the App's (so it quits from a modal); listed here first so the footer shows it first.
        Binding("ctrl+q", "app.quit", "quit", id="app.quit", priority=True),
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
                 clock: Callable[[], float] = time.time, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.connection = connection
        self.changes = ChangeWatch(home)
        self.config = connection.config
        self.agents = connection.agents
        self.grace_s = grace_s
        self.clock = clock  # wall time for countdowns and the header (snapshots fix it)
        self.panes: dict[str, AgentPane] = {}
        self.approvals = ApprovalQueue()
        self.alerts = TerminalAlerts(self.config.notify)  # the bell and OSC 9/777, once per thing
        self._meter_seen: MeterSnapshot | None = None
        self.mcp_withheld: dict[str, list[McpTool]] = {}  # by server, read on the slow refresh
        self._mcp_told: set[tuple[str, str, str]] = set()  # (server, tool, hash) already notified
        self.pacer = FramePacer()
        self.stopping = False  # the App is letting go of the connection: draw no more
        self.last_slow = 0.0  # when tasks, channels and approvals were last read (monotonic)
        self._selected_task: int | None = None
        self._ticking = False
        self._reading_changes = False
        self._changes_again = False  # asked for while a read was under way: read once more

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
        # The screen's workers run on the App: a worker's state reaches only its own node
        # (it does not bubble), and the App is the one place failures become notifications.
        self.app.run_worker(self._follow_events(), name="events", exit_on_error=False)
        self.set_interval(1 / self.config.ui.refresh_hz, self._tick)
        self.query_one(Composer).focus()

    # --- live data ---

    async def _tick(self) -> None:
        if self._ticking or self.stopping:
            return  # a slow read: skip a frame rather than pile them up
        if not self.pacer.frame():
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

    async def _refresh(self) -> None:
        progress = self.query_one("#load-progress", ProgressBar)
        if not self.connection.ready.is_set():
            if self.connection.progress is not None:
                progress.update(progress=self.connection.progress)
            self.query_one(SlotMeter).show(None, time.monotonic(), self.connection.progress)
            return
        progress.display = False
        deck = await self.connection.deck()
        for view in deck.agents:
            await self.panes[view.name].show(view)
        self.query_one(SlotMeter).show(deck.meter, time.monotonic())
        self._meter_seen = deck.meter
        self.query_one(EventLog).flush()
        now = time.monotonic()
        if now - self.last_slow >= SLOW_EVERY_S:
            self.last_slow = now
            await self._refresh_slow()

    async def _refresh_slow(self) -> None:
        store = self.connection.store
        assert store is not None
        tasks = await store.read(queries.tasks)
        self.query_one(TaskView).show(tasks)
        channels = self.query_one(Channels)
        if channels.selected == DIRECT:
            channels.show(await store.read(queries.direct_messages, OWNER))
        else:
            channels.show(await store.read(queries.messages, channels.selected))
        pending = await store.read(queries.approvals, status="pending")
        gone = self.approvals.update(pending, self.clock())
        if gone is not None:
            await self._gone(gone)
        if self.alerts.on:
            self._alert([*self.alerts.approvals(self.approvals.pending), *self.alerts.tasks(tasks),
                         *self.alerts.meter(self._meter_seen)])
        if self.config.mcp:
            await self._read_mcp()
        self._show_badge()
        self._next_modal()
        self.read_changes()

    def read_changes(self) -> None:
        """Read the files the shown tasks changed, in a worker: working them out may run
        git, and the tick must not wait for it."""
        if self._reading_changes:
            self._changes_again = True
            return
        self._reading_changes = True
        self.app.run_worker(self._refresh_changes(), group="changes", exit_on_error=False)

    async def _refresh_changes(self) -> None:
        try:
            self._changes_again = True
            while self._changes_again and not self.stopping:
                self._changes_again = False
                await self._read_changes_once()
        except NoMatches:
            pass  # the screen is being torn down
        except RuntimeError:
            if not self.stopping:  # the store closed under a read while the crew stops
                raise
        finally:
            self._reading_changes = False

    async def _read_changes_once(self) -> None:
        store = self.connection.store
        if store is None:
            return
        selected = self._selected_task
        wanted = [p.task_id for p in self.panes.values() if p.task_id is not None]
        found = await self.changes.read(store.read, [*wanted, *([selected] if selected is not None else [])])
        tokens = await store.read(ledger.tasks_tokens, wanted)  # one query for every pane
        for pane in self.panes.values():
            watched = found.get(pane.task_id) if pane.task_id is not None else None
            pane.show_changes(watched.changes if watched is not None else None)
            pane.show_tokens(tokens.get(pane.task_id) if pane.task_id is not None else None)
        if selected is not None and selected == self._selected_task:
            self.query_one(TaskView).show_changes(_change_lines(found.get(selected)))

    async def _follow_events(self) -> None:
        await self.connection.ready.wait()
        assert self.connection.bus is not None and self.connection.store is not None
        last = await self.connection.store.read(queries.last_event_id)
        sub = await self.connection.bus.subscribe(None, EventFilter(), start=max(last - 200, 0),
                                                  maxsize=EVENT_QUEUE)
        log = self.query_one(EventLog)
        async for event in sub:
            log.add(event)  # drawn by the next tick, with everything else that came

    # --- alerts ---

    def _alert(self, notes: list[Note]) -> None:
        """Ring the bell and raise a desktop notification through the terminal (its text
        terminal-safe and capped), once for all that is new; recorded as the `terminal`
        channel. In quiet hours: recorded as skipped."""
        if not notes:
            return
        notify = self.config.notify
        quiet = in_quiet_hours(notify, datetime.datetime.now())
        driver = self.app._driver  # no public API writes a sequence to the terminal
        if not quiet and driver is not None and not self.app.is_headless:
            alerts = [terminal_alert(note, bell=False, osc=notify.terminal) for note in notes[:3]]
            driver.write(("\a" if notify.bell else "") + "".join(alerts))
        how = ", ".join(part for part, on in (("bell", notify.bell), ("OSC 9/777", notify.terminal)) if on)
        self.app.run_worker(self._record_alerts(notes, "skipped" if quiet else "sent",
                                                "quiet hours" if quiet else how),
                            group="alerts", exit_on_error=False)

    async def _record_alerts(self, notes: list[Note], status: Literal["sent", "skipped"],
                             detail: str) -> None:
        store = self.connection.store
        if store is None:
            return
        for note in notes:
            await store.write(record_notification, OWNER, note.event, note.subject, "terminal",
                              approval_id=note.approval_id, status=status, detail=detail)

    # --- approvals ---

    def _show_badge(self) -> None:
        badge = self.query_one("#approval-badge", Static)
        count = len(self.approvals.pending)
        keys = self.key_for("approvals.next")
        parts = [f"{count} approval(s) pending — {keys} to decide"] if count else []
        if self.mcp_withheld:
            then = " (after the approvals)" if count else ""
            parts.append(f"{withheld_summary(self.mcp_withheld)} — {keys} to review{then}")
        badge.set_class(bool(parts), "-shown")
        badge.update(" · ".join(parts))

    def key_for(self, binding_id: str) -> str:
        """The key that runs a binding, as the keymap left it."""
        keys = self.config.keymap.get(binding_id)
        if keys:
            return keys
        return next((b.key for b in self.BINDINGS if isinstance(b, Binding) and b.id == binding_id), "?")

    def _next_modal(self) -> None:
        approval = self.approvals.take_next()  # never one while another is on screen
        if approval is not None:
            self.app.push_screen(ApprovalModal(approval, grace_s=self.grace_s, clock=self.clock),
                                 lambda answer, a=approval: self._answered(a, answer))

    async def _gone(self, approval_id: int) -> None:
        """The approval on screen was decided elsewhere (`agentdeck approve`) or ran out of
        time: off the screen at once, so no key decides it again, and say what became of it."""
        modal = self.app.screen
        if not isinstance(modal, ApprovalModal) or modal.approval.id != approval_id:
            return  # something is on top of it (the palette): the next refresh tries again
        assert self.connection.store is not None
        now = await self.connection.store.read(queries.approval, approval_id)
        if self.app.screen is modal:  # not answered by a key while the read was under way
            modal.dismiss("gone")
            self.notify(safe_text(what_became_of(approval_id, now)))

    def _answered(self, approval: Approval, answer: str | None) -> None:
        undecided = answer in (None, "gone", "later", "goto")
        # Gone: decided elsewhere or expired, nothing left to decide; otherwise put off.
        self.approvals.closed(approval.id, put_off=undecided and answer != "gone")
        if not undecided:
            assert answer is not None
            self.app.run_worker(self._decide(approval, answer), group="decide", exit_on_error=False)
            return
        if answer == "goto" and approval.agent in self.panes:
            self.panes[approval.agent].focus()
        self._show_badge()

    async def _decide(self, approval: Approval, answer: str) -> None:
        approve, scope = decision_for(answer)
        try:
            await self.connection.decide(approval.id, approve, scope)
        except AgentdeckError as err:
            self.notify(safe_text(f"approval {approval.id}: {err}"), severity="error")
            return
        verb = "approved" if approve else "denied"
        self.notify(safe_text(f"approval {approval.id} {verb} ({scope}): {approval.agent} {approval.tool}"))
        self.approvals.decided(approval.id)
        self._show_badge()
        self._next_modal()

    def action_next_approval(self) -> None:
        if not self.approvals.ask_again():
            if self.mcp_withheld:  # no call waits: the MCP tools withheld are next
                self.review_mcp(next(iter(self.mcp_withheld)))
                return
            self.notify("no approvals pending")
            return
        self._next_modal()

    # --- MCP tools withheld until approved ---

    async def _read_mcp(self) -> None:
        """The configured servers' tools listed but not offered (new or changed since
        pinned); a notification the first time each change is seen."""
        assert self.connection.store is not None
        self.mcp_withheld = withheld_by_server(await self.connection.store.read(queries.mcp_tools),
                                               self.config.mcp)
        for server, tools in self.mcp_withheld.items():
            seen = {(server, t.name, t.schema_hash) for t in tools}
            if not seen <= self._mcp_told:
                self._mcp_told |= seen
                self.notify(safe_text(f"{withheld_summary({server: tools})} until you approve them: "
                                      f"{self.key_for('approvals.next')} or the palette to review"),
                            severity="warning")

    def review_mcp(self, server: str) -> None:
        """Show the server's withheld tools, each change whole, to approve or leave."""
        if isinstance(self.app.screen, McpReviewModal):
            return  # one review at a time
        tools = self.mcp_withheld.get(server)
        if not tools:
            self.notify(safe_text(f"no MCP tools of {server} are withheld"))
            return
        self.app.push_screen(McpReviewModal(server, tools, grace_s=self.grace_s),
                             lambda answer: self._mcp_answered(server, tools, answer))

    def _mcp_answered(self, server: str, tools: list[McpTool], answer: str | None) -> None:
        if answer == "approve":
            self.app.run_worker(self._approve_mcp(server, tools), group="decide", exit_on_error=False)

    async def _approve_mcp(self, server: str, tools: list[McpTool]) -> None:
        try:
            approved = await self.connection.approve_mcp(server, tools)
            self.notify(safe_text(f"approved {len(approved)} tool(s) of {server}: "
                                  + ", ".join(t.name for t in approved)))
        except AgentdeckError as err:
            self.notify(safe_text(f"MCP {server}: {err}"), severity="error")
        await self._read_mcp()  # the badge (and a review again) as they are now, not at the next refresh
        self._show_badge()

    # --- composer, tabs, panes, tasks, memory ---

    @on(Input.Submitted, "#composer")
    async def _send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.connection.store is None:
            return
        composer = self.query_one(Composer)
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

    def prefill(self, text: str) -> None:
        """Start a request in the composer (the palette's `send to …`)."""
        composer = self.query_one(Composer)
        composer.value = text
        composer.cursor_position = len(text)
        composer.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The F-keys are priority bindings; while a modal (an approval, the palette) is
        up they pass the key on to it instead, and the footer hides them."""
        if action in ("show_tab", "maximize_pane", "focus_composer"):
            return self.app.screen is self
        return True

    def action_focus_composer(self) -> None:
        self.query_one(Composer).focus()

    def action_show_tab(self, tab: str) -> None:
        """Show the tab and focus what it is used through, so the keyboard alone reaches it."""
        self.query_one(TabbedContent).active = tab
        self.query_one(TAB_FOCUS[tab]).focus()

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

    @property
    def selected_task(self) -> int | None:
        """The task whose detail is shown (the palette offers to undo its changes)."""
        return self._selected_task

    @property
    def focused_task(self) -> int | None:
        """The current task of the agent whose pane has focus."""
        focused = self.focused
        pane = next((p for p in self.panes.values() if focused is p or (focused and p in focused.ancestors)),
                    None)
        return pane.task_id if pane is not None else None

    def open_task(self, task_id: int) -> None:
        self.action_show_tab("tasks")
        self.post_message(TaskView.Selected(task_id))

    @on(TaskView.Selected)
    async def _task_selected(self, event: TaskView.Selected) -> None:
        self._selected_task = event.task_id
        store = self.connection.store
        if store is None:
            return
        text, steps = await store.read(task_detail, event.task_id)
        if self._selected_task == event.task_id:
            view = self.query_one(TaskView)
            view.show_detail(text, steps)
            view.show_changes([])  # the previous task's, until this one's are read
            self.read_changes()

    @on(MemoryBrowser.Search)
    async def _search_memory(self, event: MemoryBrowser.Search) -> None:
        if self.connection.store is None or not event.query.strip():
            return
        found = await self.connection.store.read(queries.search_memory, event.query, agent=None, limit=50,
                                                 include_compacted=True)
        self.query_one(MemoryBrowser).show(found)


def _change_lines(watched: Watched | None) -> list[str]:
    if watched is None:
        return []
    if watched.changes is None:
        return [watched.error]
    return change_lines(watched.changes) if worth_showing(watched.changes) else []
