"""The approval modal: what an agent wants to do, exactly, and the keys to decide.

Everything shown came from a model, a tool or the database, so every line goes through
`safe_text` and is shown as plain text (never markup, never interpreted). Keys pressed
in the first 300 ms are ignored, so a keystroke meant for the composer cannot approve
something the person has not seen. Dismissed with the answer: once, session, always,
deny, later (stays pending) or goto (stays pending; show the agent's pane). A write's
diff is shown in a box of its own that scrolls, so the keys stay on the screen.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Static

from agents.protocol import Approval
from agents.runtime.approval_text import PREVIEW_HEADING, approval_lines, preview_lines
from agents.safe_text import safe_text

GRACE_S = 0.3


DIFF_STYLES = {"+": "green", "-": "red", "@": "cyan"}


def diff_text(lines: list[str]) -> Text:
    """Terminal-safe preview lines as one Text, added and removed lines coloured."""
    text = Text()
    for i, line in enumerate(lines):
        style = "bold" if line.startswith(("+++ ", "--- ")) else DIFF_STYLES.get(line[:1], "")
        text.append(("\n" if i else "") + line, style=style)
    return text


class ApprovalModal(ModalScreen[str]):
    DEFAULT_CSS = """
    ApprovalModal .approval-diff {
        height: auto;
        max-height: 20;
        background: $panel;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer('once')", "approve once", id="approval.once"),
        Binding("s", "answer('session')", "this session", id="approval.session"),
        Binding("a", "answer('always')", "always", id="approval.always"),
        Binding("n", "answer('deny')", "deny", id="approval.deny"),
        Binding("escape", "answer('later')", "decide later", id="approval.later"),
        Binding("g", "answer('goto')", "go to agent", id="approval.goto"),
    ]

    def __init__(self, approval: Approval, *, grace_s: float = GRACE_S,
                 clock: Callable[[], float] = time.time, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.approval = approval
        self.grace_s = grace_s
        self.clock = clock
        self.shown_at = time.monotonic()

    def compose(self) -> ComposeResult:
        a = self.approval
        lines = approval_lines(a, self.clock(), with_preview=False)
        preview = preview_lines(a)
        with Vertical(id="approval-box"):
            title = lines[0].rsplit(" (", 1)[0]  # its "(expires in …)" is the live countdown below
            yield Static(Text(safe_text(title), style="bold"), id="approval-title")
            for line in lines[1:]:
                classes = "approval-reason" if line.lstrip().startswith("agent says:") else ""
                yield Static(Text(safe_text(line)), classes=classes)
            if preview:
                yield Static(Text(PREVIEW_HEADING))
                with VerticalScroll(classes="approval-diff"):
                    yield Static(diff_text(preview), id="approval-diff")
            yield Static("", id="approval-countdown")
            keys = "y once · s this session · " + ("a always · " if a.always_rule else "") + \
                "n deny · Esc later · g go to agent"
            yield Static(Text(keys), classes="approval-keys")

    def on_mount(self) -> None:
        self.shown_at = time.monotonic()
        self._tick()
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        left = self.approval.expires_at - self.clock()
        text = f"expires in {int(left)} s" if left > 0 else "expired"
        with contextlib.suppress(NoMatches):  # the modal is being torn down
            self.query_one("#approval-countdown", Static).update(Text(text), layout=False)

    def action_answer(self, answer: str) -> None:
        if time.monotonic() - self.shown_at < self.grace_s:
            return  # too soon to have read it
        if answer == "always" and not self.approval.always_rule:
            self.notify("always is not offered for this call: no rule can allow it", severity="warning")
            return
        self.dismiss(answer)
