"""One agent's pane: state (a glyph and a word, not colour alone), health, task, the
files its task changed, the model output streaming as it is generated, the last tool
call, tokens/s, and the task's tokens so far.

The pane never receives a message per token: the app's timer hands it the agent's
latest `AgentView`. Output that is Markdown is appended through Textual's Markdown
streaming, scrolling only when the reader is already at the bottom; output that is JSON
(most of it: steps are grammar-constrained) is shown as plain text, its tail redrawn
once per tick, because re-parsing one ever-growing JSON paragraph as Markdown cost the
inference a third of its speed (`agentdeck bench tui`).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Markdown, Static

from agents.checkpoints.changes import TaskChanges
from agents.runtime.change_text import pane_line
from agents.runtime.deck import AgentView
from agents.runtime.ledger import TaskTokens, pane_tokens
from agents.safe_text import safe_text

STATES = {  # state -> (glyph and word, css class)
    "idle": ("○ idle", ""),
    "triage": ("◇ triage", ""),
    "acting": ("▶ act", ""),
    "reflecting": ("◆ reflect", ""),
    "waiting": ("⏸ waiting approval", "-waiting"),
    "paused": ("‖ paused", "-waiting"),
    "crashed": ("✖ error", "-error"),
    "stopped": ("■ stopped", "-error"),
    "offline": ("· offline", ""),
}
PLAIN_TAIL = 2000  # characters of JSON output shown (the pane shows far fewer lines)
HEALTH = {"green": ("●", "green"), "amber": ("▲", "yellow"), "red": ("✖", "red")}


def progress_text(view: AgentView, now: float) -> str:
    """What the call adds to the state word, each thing once: `step 2/8 · 17s`, `17s`
    (the time in the phase: a long prefill shows it is still going)."""
    parts = []
    if view.max_steps:
        parts.append(f"step {view.step}/{view.max_steps}")
    elif view.phase and view.phase not in STATES.get(view.state, ("", ""))[0]:
        parts.append(safe_text(view.phase))  # a phase the state word does not already say
    if view.phase and view.phase_started:
        parts.append(f"{max(0, int(now - view.phase_started))}s")
    return " · ".join(parts)


def head_text(view: AgentView, now: float) -> Text:
    state, _ = STATES.get(view.state, (f"? {view.state}", ""))
    glyph, colour = HEALTH.get(view.health, ("?", "white"))
    text = Text()
    text.append(f"{glyph} ", style=colour)
    text.append(safe_text(view.name), style="bold")
    text.append(f"  {state}")
    progress = progress_text(view, now)
    if progress:
        text.append(f" · {progress}", style="dim")
    if view.tokens_per_s:
        text.append(f"  {view.tokens_per_s:.0f} tok/s", style="dim")
    return text


def tail_lines(text: str, width: int, height: int) -> str:
    """The last `height` lines of `text` wrapped at `width`: what a box showing the end
    of a stream displays."""
    if width < 1 or height < 1:
        return ""
    lines: list[str] = []
    for raw in safe_text(text, keep_newlines=True).split("\n"):
        lines += [raw[i:i + width] for i in range(0, len(raw), width)] or [""]
    return "\n".join(lines[-height:])


class AgentPane(Vertical):
    DEFAULT_CSS = """
    AgentPane .pane-changes {
        height: 1;
        color: $text-muted;
        display: none;
    }
    """
    can_focus = True

    def __init__(self, agent: str, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.agent = agent
        self._call = ""
        self._shown = 0  # characters of the current call already written
        self._stream = None
        self._mode = ""  # "plain" (JSON) or "markdown", per model call
        self._last: tuple[object, ...] = ()
        self.task_id: int | None = None  # the task the pane last showed
        self._changes: TaskChanges | None = None
        self._changes_line = ""
        self._tokens = ""  # the current task's tokens so far, short (the deck's slow refresh)

    def compose(self) -> ComposeResult:
        yield Static(Text(self.agent), classes="pane-head")
        yield Static("", classes="pane-task")
        yield Static("", classes="pane-changes")
        yield Static("", classes="pane-plain")
        with VerticalScroll(classes="pane-body"):
            yield Markdown("")
        yield Static("", classes="pane-tool")

    async def show(self, view: AgentView, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.task_id = view.task_id
        summary = (view.state, view.health, progress_text(view, now), round(view.tokens_per_s), view.task_id,
                   view.task_title, view.last_tool, view.last_tool_outcome, view.detail, view.note,
                   self._tokens)
        if summary != self._last:
            self._last = summary
            # One line each, fixed: no layout pass (a full reflow per tick cost the engine CPU).
            self.query_one(".pane-head", Static).update(head_text(view, now), layout=False)
            task = f"#{view.task_id} {view.task_title}" if view.task_id else "no task"
            if view.task_id and self._tokens:
                task += f" · {self._tokens}"
            self.query_one(".pane-task", Static).update(Text(safe_text(task)), layout=False)
            outcome = f" → {view.last_tool_outcome}" if view.last_tool_outcome else " (running)"
            tool = f"last tool: {view.last_tool}{outcome}" if view.last_tool else view.detail
            if view.note:  # a retried parse says so while it lasts (the next call clears it)
                tool = f"⟳ {view.note}"
            self.query_one(".pane-tool", Static).update(Text(safe_text(tool)), layout=False)
            for _, cls in STATES.values():
                if cls:
                    self.remove_class(cls)
            cls = STATES.get(view.state, ("", ""))[1]
            if cls:
                self.add_class(cls)
        await self._stream_text(view)

    def show_changes(self, changes: TaskChanges | None) -> None:
        """The files the current task changed, one line (none when it changed nothing);
        the deck hands them over on its slow refresh."""
        self._changes = changes
        self._draw_changes()

    def show_tokens(self, tokens: TaskTokens | None) -> None:
        """The current task's tokens so far (its subtasks' included), drawn on the task line
        by the next `show`; the deck hands them over on its slow refresh."""
        self._tokens = pane_tokens(tokens)

    @property
    def tokens_text(self) -> str:
        """The tokens as the task line shows them (tests read it)."""
        return self._tokens

    def on_resize(self) -> None:
        if self._changes is not None:
            self._draw_changes()  # the line is cut to the width

    def _draw_changes(self) -> None:
        line = pane_line(self._changes, self.size.width)
        if line == self._changes_line:
            return
        self._changes_line = line
        shown = self.query_one(".pane-changes", Static)
        shown.display = bool(line)
        shown.update(Text(line))

    @property
    def changes_line(self) -> str:
        """The changed-files line as shown (tests read it)."""
        return self._changes_line

    async def _stream_text(self, view: AgentView) -> None:
        if not view.call or not view.phase:
            return
        markdown = self.query_one(Markdown)
        plain = self.query_one(".pane-plain", Static)
        if view.call != self._call:  # a new model call: a fresh stream
            if self._stream is not None:
                await self._stream.stop()
                self._stream = None
            await markdown.update("")
            plain.update("", layout=False)
            self._call, self._shown, self._mode = view.call, 0, ""
        new = view.fed - self._shown
        if new <= 0:
            return
        if not self._mode:  # decided by the call's first characters
            self._mode = "plain" if view.text.lstrip()[:1] in ("{", "[") else "markdown"
            body = self.query_one(".pane-body", VerticalScroll)
            body.display = self._mode == "markdown"
            plain.display = self._mode == "plain"
            if self._mode == "markdown":
                self._stream = Markdown.get_stream(markdown)
        body = self.query_one(".pane-body", VerticalScroll)
        at_bottom = body.scroll_y >= body.max_scroll_y - 1
        if self._mode == "plain":  # the tail that fits, in a box of fixed size
            # Content, not a Rich Text: Textual renders its own kind several times faster.
            plain.update(Content(tail_lines(view.text[-PLAIN_TAIL:], plain.size.width, plain.size.height)),
                         layout=False)
        elif self._stream is not None:
            piece = view.text[-new:] if new <= len(view.text) else view.text  # the tail we still have
            await self._stream.write(safe_text(piece, keep_newlines=True))
        self._shown = view.fed
        if at_bottom:
            body.scroll_end(animate=False)

    @property
    def shown_text(self) -> str:
        """What the pane shows of the current call (tests read it)."""
        if self._mode == "plain":
            return str(self.query_one(".pane-plain", Static).render())
        return self.query_one(Markdown).source
