"""One agent's pane: state (a glyph and a word, not colour alone), health, task, the
model output streaming as it is generated, the last tool call, tokens/s.

The pane never receives a message per token: the app's timer hands it the agent's
latest `AgentView` and the pane appends only what is new, through Textual's Markdown
streaming, scrolling only when the reader is already at the bottom.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown, Static

from agents.runtime.deck import AgentView
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
HEALTH = {"green": ("●", "green"), "amber": ("▲", "yellow"), "red": ("✖", "red")}


def head_text(view: AgentView) -> Text:
    state, _ = STATES.get(view.state, (f"? {view.state}", ""))
    glyph, colour = HEALTH.get(view.health, ("?", "white"))
    text = Text()
    text.append(f"{glyph} ", style=colour)
    text.append(safe_text(view.name), style="bold")
    text.append(f"  {state}")
    if view.phase:
        text.append(f" · {safe_text(view.phase)}", style="dim")
    if view.tokens_per_s:
        text.append(f"  {view.tokens_per_s:.0f} tok/s", style="dim")
    return text


class AgentPane(Vertical):
    can_focus = True

    def __init__(self, name: str) -> None:
        super().__init__(id=f"pane-{name}")
        self.agent = name
        self._call = ""
        self._shown = 0  # characters of the current call already written
        self._stream = None
        self._last: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(Text(self.agent), classes="pane-head")
        yield Static("", classes="pane-task")
        with VerticalScroll(classes="pane-body"):
            yield Markdown("")
        yield Static("", classes="pane-tool")

    async def show(self, view: AgentView) -> None:
        summary = (view.state, view.health, view.phase, round(view.tokens_per_s), view.task_id,
                   view.task_title, view.last_tool, view.detail)
        if summary != self._last:
            self._last = summary
            self.query_one(".pane-head", Static).update(head_text(view))
            task = f"#{view.task_id} {view.task_title}" if view.task_id else "no task"
            self.query_one(".pane-task", Static).update(Text(safe_text(task)))
            tool = f"last tool: {view.last_tool}" if view.last_tool else safe_text(view.detail)
            self.query_one(".pane-tool", Static).update(Text(safe_text(tool)))
            for _, cls in STATES.values():
                if cls:
                    self.remove_class(cls)
            cls = STATES.get(view.state, ("", ""))[1]
            if cls:
                self.add_class(cls)
        await self._stream_text(view)

    async def _stream_text(self, view: AgentView) -> None:
        if not view.call or not view.phase:
            return
        markdown = self.query_one(Markdown)
        if view.call != self._call:  # a new model call: a fresh stream
            if self._stream is not None:
                await self._stream.stop()
            await markdown.update("")
            self._stream = Markdown.get_stream(markdown)
            self._call, self._shown = view.call, 0
        new = view.fed - self._shown
        if new <= 0 or self._stream is None:
            return
        piece = view.text[-new:] if new <= len(view.text) else view.text  # the tail we still have
        self._shown = view.fed
        body = self.query_one(".pane-body", VerticalScroll)
        at_bottom = body.scroll_y >= body.max_scroll_y - 1
        await self._stream.write(safe_text(piece, keep_newlines=True))
        if at_bottom:
            body.scroll_end(animate=False)

    @property
    def shown_text(self) -> str:
        """What the pane's Markdown holds (tests and the bench read it)."""
        return self.query_one(Markdown).source
