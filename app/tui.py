"""`agentdeck` (and `agentdeck run` in a terminal) starts the TUI with the crew embedded;
`agentdeck attach` opens it on the home of an instance running headless. One factory,
`make_app`, builds the app for both, for the tests and for the screenshots."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from agents.config import Config
from agents.config.load import EMBEDDED_BACKEND
from agents.errors import ConfigError
from agents.inference import Backend, build_backends, resolve_model_path
from agents.inference.factory import backends_in_use
from app.cockpit import Cockpit
from app.connection import Attached, Connection, Embedded
from app.context import Context
from app.palette import DeckCommands
from app.screens.deck import DeckScreen
from themes import THEMES
from widgets.approval import GRACE_S, ApprovalModal
from widgets.composer import Composer
from widgets.mcp_review import McpReviewModal


def binding_ids() -> set[str]:
    found = set()
    for owner in (Cockpit, DeckScreen, ApprovalModal, McpReviewModal, Composer):
        found |= {b.id for b in owner.BINDINGS if getattr(b, "id", None)}  # type: ignore[union-attr]
    return found


def check_ui_config(config: Config) -> None:
    """Before any terminal is taken over: one line and exit 2 for a bad [ui] or [keymap]."""
    if config.ui.theme not in THEMES:
        raise ConfigError(f"ui.theme: unknown theme {config.ui.theme!r} (themes: {', '.join(THEMES)})")
    unknown = sorted(set(config.keymap) - binding_ids())
    if unknown:
        known = ", ".join(sorted(binding_ids()))
        raise ConfigError(f"keymap: unknown binding id {unknown[0]!r} (ids: {known})")


def make_app(connection: Connection, home: Path, *, grace_s: float = GRACE_S,
             theme: str | None = None, clock: Callable[[], float] = time.time) -> Cockpit:
    check_ui_config(connection.config)
    app = Cockpit(connection, home, grace_s=grace_s, theme=theme, clock=clock)
    app.COMMANDS = app.COMMANDS | {DeckCommands}
    return app


def embedded(ctx: Context, config: Config, backend: Backend | None = None,
             model: str | None = None) -> Embedded:
    if backend is None:
        # The embedded model, when an agent uses it: a missing one fails here, before the TUI.
        path = (resolve_model_path(model, config.inference.model, home=ctx.home)
                if EMBEDDED_BACKEND in backends_in_use(config) else None)
        connection: Embedded | None = None

        def progress(fraction: float) -> None:  # the engine thread: one float, read by the timer
            if connection is not None:
                connection.progress = fraction

        backend = build_backends(config, model=path, progress=progress, home=ctx.home)
        connection = Embedded(ctx.db_path, config, backend)
        return connection
    return Embedded(ctx.db_path, config, backend)


def cmd_tui(ctx: Context, args: argparse.Namespace) -> int:
    config = ctx.config
    check_ui_config(config)
    ctx.ensure_home()
    connection = embedded(ctx, config, model=getattr(args, "model", None))
    app = make_app(connection, ctx.home)
    try:
        return app.run() or 0
    finally:
        # The terminal is restored by now; a thread stuck in a native call (a tokenizer
        # on a huge text) must not keep the interpreter from exiting (it joins them).
        if connection.host is not None:
            connection.host.exit_within()


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    del args
    config = ctx.config
    check_ui_config(config)
    ctx.ensure_home()
    app = make_app(Attached(ctx.db_path, config), ctx.home)
    return app.run() or 0
