"""`agentdeck run`: the TUI in a terminal, else the headless front end of the running
instance.

The host (agents.runtime) claims the home, recovers, and keeps the house; this module
only presents it: the model-load progress bar, what recovery found, one line (or JSON
line) per event on stdout, and the signals that stop it (SIGINT, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from agents.bus import Subscription
from agents.config import Config
from agents.config.load import EMBEDDED_BACKEND
from agents.inference import Backend, RoutedBackend, build_backends, resolve_model_path
from agents.inference.factory import backends_in_use
from agents.inference.model import GIB
from agents.protocol import Event, TaskCreated
from agents.runtime import Host, Recovery
from agents.runtime.event_text import event_line, task_of
from agents.safe_text import safe_text
from agents.store import queries
from app.args import add_command
from app.context import Context
from app.progress import LoadProgress
from app.render import event_json

log = logging.getLogger(__name__)

LINE_WIDTH = 100  # an event line's width when stdout is not a terminal (and no $COLUMNS)
TITLES_KEPT = 1000  # task titles remembered for event lines


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "run", cmd_run, "start agentdeck: the TUI in a terminal, or --headless")
    p.add_argument(
        "--headless", action="store_true",
        help="no TUI; report events on stdout (also when stdin or stdout is not a terminal)",
    )
    p.add_argument(
        "--approvals", choices=["deny", "cli"], default="deny",
        help="headless approvals: deny (default) every request, or cli: wait for "
        "`agentdeck approve ID` from another terminal",
    )
    p.add_argument("--json", action="store_true", help="report events as JSON lines")
    p.add_argument("--until-idle", action="store_true", help="exit 0 once no task is queued or "
                   "active and no approval is pending")
    p.add_argument("--model", metavar="PATH", help="GGUF model file or `agentdeck models` name (default: "
                   "inference.model, else the embedded SmolLM2-135M-Instruct)")


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    headless = args.headless or args.until_idle or args.json or not terminal
    if not headless:
        from app.tui import cmd_tui

        return cmd_tui(ctx, args)
    config = ctx.config  # a bad config or a missing model fails here, before anything starts
    # The embedded model, when an agent uses it (other backends are checked as they build).
    model = (resolve_model_path(args.model, config.inference.model, home=ctx.home)
             if EMBEDDED_BACKEND in backends_in_use(config) else None)
    ctx.ensure_home()
    instance = Instance(ctx, config, model, approvals=args.approvals, as_json=args.json,
                        until_idle=args.until_idle)
    return asyncio.run(instance.run())


def _write_line(line: str) -> bool:
    """False once nobody reads stdout any more (`agentdeck run | head`)."""
    try:
        sys.stdout.write(safe_text(line) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


class Instance:
    """The headless front end: the host, reported as lines on stdout."""

    def __init__(
        self, ctx: Context, config: Config, model: Path | None, *, approvals: str, as_json: bool,
        until_idle: bool = False,
    ) -> None:
        self.until_idle = until_idle
        self.ctx = ctx
        self.config = config
        self.model = model
        # What loads: the embedded model's file when it is all, else the backends the agents use.
        used = backends_in_use(config)
        self.what = model.name if model is not None and used == [EMBEDDED_BACKEND] else ", ".join(used)
        self.approvals = approvals
        self.as_json = as_json
        self.reporting = True  # until stdout's reader goes away
        self._titles: OrderedDict[int, str] = OrderedDict()  # task id -> title, for event lines

    async def say(self, line: str) -> None:
        """A line on stdout, written off the loop: a stalled pipe (a paused pager) must
        not stall heartbeats; it only slows the reporter, whose bus queue then fills."""
        if self.reporting and not await asyncio.to_thread(_write_line, line):
            self.reporting = False  # the instance keeps running; it only stops reporting
            log.warning("stdout was closed; no more event lines")

    async def run(self) -> int:
        loading = LoadProgress(Console(stderr=True), safe_text(f"loading {self.what}"))
        with loading as progress:
            engine = build_backends(self.config, model=self.model, progress=progress, home=self.ctx.home)
            host = Host(self.ctx.db_path, self.config, backend=engine, crew=True,
                        approvals=self.approvals)  # type: ignore[arg-type]
            # Before the model loads: a signal in the first second stops cleanly too.
            restore = self._handle_signals(host)
            try:
                await self.say(f"loading model {self.what}")
                async with host:
                    loading.finish()  # loaded: the bar leaves the screen
                    exit_code = await self._present(host, engine)
            finally:
                restore()
        return exit_code

    def _handle_signals(self, host: Host) -> Callable[[], None]:
        """SIGINT, SIGTERM and SIGHUP (a closed terminal, `systemctl reload`) stop the host
        and wake its exit watchdog. signal.signal, not the loop's handler: this runs even
        while the loop is busy, and the watchdog then ends a stop that cannot finish. The
        watchdog's thread starts here, before the handlers: a handler only wakes it."""
        loop = asyncio.get_running_loop()
        host.arm_exit_watchdog()

        def on_signal(_signum: int, _frame: object) -> None:
            host.exit_within()
            loop.call_soon_threadsafe(host.stop)

        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, on_signal) for sig in sigs}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    async def _present(self, host: Host, engine: Backend) -> int:
        if not host.stopping.is_set():  # stopped while the model loaded: just say so
            await self._serve(host, engine)
        host.exit_within()  # whatever stopped it, the shutdown that follows is bounded
        await self.say("agentdeck stopped" if host.exit_code == 0 else "agentdeck stopped: claim lost")
        return host.exit_code

    async def _serve(self, host: Host, engine: Backend) -> None:
        snap = engine.snapshot()
        await self.say(
            f"model {self.what} loaded in {engine.load_time_s:.1f} s on "
            f"{snap.device}: {len(snap.slots)} slots, {snap.kv_total} KV cells"
        )
        if isinstance(engine, RoutedBackend) and len(engine.memory) > 1:  # several models in this process
            await self.say("embedded models (estimated before loading): " + ", ".join(
                f"{m.backend} {m.model} ~{m.total_bytes / GIB:.2f} GiB" for m in engine.memory.values()))
        reporter = await host.subscribe()
        assert host.recovery is not None
        await self._report_recovery(host.recovery)
        await self.say(
            f"agentdeck running (pid {host.pid}, home {self.ctx.home}, approvals: "
            f"{self.approvals}); Ctrl-C stops"
        )
        printer = asyncio.create_task(self._print_events(reporter, host))
        watcher = asyncio.create_task(self._stop_when_idle(host)) if self.until_idle else None
        try:
            await host.stopping.wait()
        finally:
            for task in (printer, watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _stop_when_idle(self, host: Host) -> None:
        assert host.crew is not None
        await host.crew.wait_idle()
        await asyncio.sleep(0.5)  # let the reporter print the last events
        host.stop()

    async def _report_recovery(self, recovery: Recovery) -> None:
        for call in recovery.interrupted:
            await self.say(
                f"recovered: tool call {call.id} ({call.agent} {call.tool}) was interrupted; "
                "not run again"
            )
        if recovery.expired:
            await self.say(f"recovered: {len(recovery.expired)} approval(s) expired while agentdeck was down")
        if recovery.pending:
            await self.say(f"{len(recovery.pending)} approval(s) pending: `agentdeck approvals` lists them")

    async def _print_events(self, sub: Subscription, host: Host) -> None:
        async for event in sub:
            try:
                await self.say(event_json(event) if self.as_json else await self._line(event, host))
            except Exception as err:  # one event that cannot be shown must not stop the rest
                log.warning("reporting event %d failed: %s", event.id, err)

    async def _line(self, event: Event, host: Host) -> str:
        """The event in words, with its task's title (remembered, else read once)."""
        task_id = task_of(event)
        if isinstance(event.payload, TaskCreated):
            self._remember(event.payload.task.id, event.payload.task.title)
        elif task_id is not None and task_id not in self._titles:
            task = await host.store.read(queries.task, task_id)
            self._remember(task_id, task.title if task is not None else "")
        title = self._titles.get(task_id) if task_id is not None else None
        width = shutil.get_terminal_size((LINE_WIDTH, 24)).columns
        return event_line(event, title=title, width=width, approve_hint=self.approvals == "cli")

    def _remember(self, task_id: int, title: str) -> None:
        self._titles[task_id] = title
        self._titles.move_to_end(task_id)
        if len(self._titles) > TITLES_KEPT:
            self._titles.popitem(last=False)
