"""The review of an MCP server's withheld tools (new, or changed since a person approved
them): each tool's change whole, as `agentdeck mcp approve` prints it, in a box that
scrolls so the keys stay on the screen; y approves them as shown, Esc leaves them
withheld. Looks like the approval modal; keys pressed in its first 300 ms are ignored,
so a keystroke meant for something else cannot approve what the person has not seen.
Every line is terminal-safe already (agents/runtime/mcp_text.py) and shown as plain text.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from agents.protocol import McpTool
from agents.runtime.mcp_text import change_lines
from agents.safe_text import safe_text
from widgets.approval import GRACE_S, diff_text


class McpReviewModal(ModalScreen[str]):
    """Dismissed with "approve" or "later"."""

    DEFAULT_CSS = """
    McpReviewModal {
        align: center middle;
    }
    McpReviewModal > #mcp-review-box {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    McpReviewModal .mcp-review-changes {
        height: auto;
        max-height: 30;
        background: $panel;
    }
    McpReviewModal .mcp-review-keys {
        margin-top: 1;
        color: $accent;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer('approve')", "approve these", id="mcp_review.approve"),
        Binding("escape", "answer('later')", "leave withheld", id="mcp_review.later"),
    ]

    def __init__(self, server: str, tools: list[McpTool], *, grace_s: float = GRACE_S,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.server = server
        self.tools = tools  # as shown: the approval names these (a later change is refused)
        self.grace_s = grace_s
        self.shown_at = time.monotonic()

    def compose(self) -> ComposeResult:
        lines: list[str] = []
        for i, tool in enumerate(self.tools):
            lines += ([""] if i else []) + change_lines(tool)
        with Vertical(id="mcp-review-box"):
            title = f"MCP server {self.server}: {len(self.tools)} tool(s) withheld from its agents"
            yield Static(Text(safe_text(title), style="bold"), id="mcp-review-title")
            yield Static(Text("new or changed since approved; agents are offered them only once approved"))
            with VerticalScroll(classes="mcp-review-changes"):
                yield Static(diff_text(lines), id="mcp-review-diff")
            yield Static(Text("y approve these · Esc leave them withheld"), classes="mcp-review-keys")

    def on_mount(self) -> None:
        self.shown_at = time.monotonic()
        self.query_one(".mcp-review-changes", VerticalScroll).focus()  # arrows and PgDn scroll it

    def action_answer(self, answer: str) -> None:
        if time.monotonic() - self.shown_at < self.grace_s:
            return  # too soon to have read it
        self.dismiss(answer)
