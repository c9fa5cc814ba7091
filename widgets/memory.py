"""The memory browser: search the agents' memories (FTS5); the app runs the query."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static

from agents.protocol import Memory
from agents.safe_text import safe_text


class MemoryBrowser(Vertical):
    class Search(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search memory (Enter)", id="memory-query")
        with VerticalScroll():
            yield Static("", id="memory-results")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Search(event.value))

    def show(self, found: list[Memory]) -> None:
        lines = [f"#{m.id} {m.agent} ({m.scope} {m.kind}, importance {m.importance}"
                 f"{', compacted' if m.compacted_into else ''}): {m.content}" for m in found]
        text = "\n".join(safe_text(line) for line in lines) or "no memories match"
        self.query_one("#memory-results", Static).update(Text(text))
