"""The composer: type a request; `@dev …` sends it to one agent, otherwise the router
decides. Agent names complete after `@`; up and down walk the history."""

from __future__ import annotations

import re
from collections import deque
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.suggester import Suggester
from textual.widgets import Input

HISTORY = 200
PARTIAL_MENTION = re.compile(r"@([a-z0-9_-]*)$")


class AgentNames(Suggester):
    def __init__(self, names: list[str]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.names = names

    async def get_suggestion(self, value: str) -> str | None:
        found = PARTIAL_MENTION.search(value)
        if found is None:
            return None
        partial = found.group(1)
        for name in self.names:
            if name.startswith(partial) and name != partial:
                return value + name[len(partial):] + " "
        return None


class Composer(Input):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "previous", show=False, id="composer.previous"),
        Binding("down", "history(1)", "next", show=False, id="composer.next"),
    ]

    def __init__(self, agents: list[str], *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(placeholder="ask the crew… (@agent to pick one; Enter sends)",
                         suggester=AgentNames(agents), name=name, id=id, classes=classes, disabled=disabled)
        self.history: deque[str] = deque(maxlen=HISTORY)
        self._at = 0  # position in history while walking it: 0 = the line being typed

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._at = 0

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self._at = max(min(self._at - step, len(self.history)), 0)
        self.value = self.history[-self._at] if self._at else ""
        self.cursor_position = len(self.value)
