"""Channels (#general, #agent-logs) and direct messages, read-only: the app hands them
the latest messages on its timer."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Select, Static

from agents.protocol import ChannelMessage
from agents.safe_text import safe_text

DIRECT = "direct messages"


class Channels(Vertical):
    def __init__(self, channels: list[str], *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.channels = channels
        self._shown: tuple[int, ...] = ()

    def compose(self) -> ComposeResult:
        options = [(f"#{c}", c) for c in self.channels] + [(DIRECT, DIRECT)]
        yield Select(options, value=self.channels[0] if self.channels else DIRECT, allow_blank=False,
                     id="channel-select")
        with VerticalScroll():
            yield Static("", id="channel-text")

    @property
    def selected(self) -> str:
        return str(self.query_one(Select).value)

    def show(self, messages: list[ChannelMessage]) -> None:
        ids = tuple(m.id for m in messages)
        if ids == self._shown:
            return
        self._shown = ids
        lines = [f"{m.sender}{' → ' + m.recipient if m.recipient else ''}: {m.body}" for m in messages]
        text = "\n".join(safe_text(line) for line in lines) or "no messages"
        self.query_one("#channel-text", Static).update(Text(text))
