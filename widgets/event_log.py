"""The event log, filterable. The app feeds it from one bounded bus subscription and
asks it to redraw at most once per tick, however many events arrived."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from agents.protocol import Event
from agents.runtime.event_text import event_text

KEPT = 2000  # events kept for filtering


class EventLog(Vertical):
    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.events: deque[Event] = deque(maxlen=KEPT)
        self._pending: list[Event] = []
        self.redraws = 0  # how often it redrew (the bench and tests read it)

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: kind, agent or text", id="log-filter")
        yield RichLog(max_lines=KEPT, wrap=False, id="log-lines")

    def add(self, event: Event) -> None:
        """Cheap: remember it; the next `flush` draws it."""
        self.events.append(event)
        self._pending.append(event)
        if len(self._pending) > KEPT:
            del self._pending[: len(self._pending) - KEPT]

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        log = self.query_one(RichLog)
        wanted = self._filter()
        lines = [event_text(e) for e in pending]
        shown = [line for line in lines if wanted in line.lower()] if wanted else lines
        if shown:
            log.write(Text("\n".join(shown)))
            self.redraws += 1

    def _filter(self) -> str:
        return self.query_one("#log-filter", Input).value.strip().lower()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        log = self.query_one(RichLog)
        log.clear()
        self._pending = list(self.events)
        self.flush()
