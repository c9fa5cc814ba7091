"""The cockpit: agentdeck's TUI. The App is thin: it holds the connection (and the
worker that runs it), the theme, and quitting; the deck screen (app/screens/deck.py)
shows the runtime. The logic shown lives in agents/ (the host, the deck, the reducers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker, WorkerState

from agents.errors import AgentdeckError
from agents.home import read_regular_text, write_private_text
from agents.safe_text import safe_text
from app.connection import Connection
from app.screens.deck import DeckScreen
from themes import AGENTDECK, STYLESHEET, THEMES
from widgets.approval import GRACE_S

SHUTDOWN_S = 15.0  # the crew's ordered stop, at most


class Cockpit(App[int]):
    TITLE = "agentdeck"
    CSS_PATH = STYLESHEET
    BINDINGS: ClassVar[list[BindingType]] = [
        # Here too so it quits from a modal; the deck's own ctrl+q is the one its footer shows.
        Binding("ctrl+q", "quit", "quit", id="app.quit", priority=True, show=False),
    ]

    def __init__(self, connection: Connection, home: Path, *, grace_s: float = GRACE_S,
                 theme: str | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.connection = connection
        self.home = home
        self.config = connection.config
        self.agents = connection.agents
        self.register_theme(AGENTDECK)
        self.theme = theme or remembered_theme(home, self.config.ui.theme)
        self.deck_screen = DeckScreen(connection, home, grace_s=grace_s, clock=clock)

    def get_default_screen(self) -> DeckScreen:
        return self.deck_screen

    def on_mount(self) -> None:
        self.set_keymap(self.config.keymap)
        self.connection_worker = self.run_worker(self.connection.run(), name="connection",
                                                 exit_on_error=False)

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
        self.deck_screen.stopping = True
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


UI_STATE = "ui.json"
UI_STATE_BYTES = 4096  # {"theme": ...}; anything bigger is not ours


def remembered_theme(home: Path, configured: str) -> str:
    try:  # read as every home file is: a FIFO or a huge file is refused, never waited on
        theme = json.loads(read_regular_text(home / UI_STATE, UI_STATE_BYTES)).get("theme")
    except (OSError, ValueError, AttributeError):
        theme = None
    return theme if theme in THEMES else configured if configured in THEMES else "agentdeck"


def remember_theme(home: Path, theme: str) -> None:
    if theme in THEMES and home.is_dir():  # private like every file in the home (0600)
        write_private_text(home / UI_STATE, json.dumps({"theme": theme}))
