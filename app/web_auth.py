"""The cockpit in a browser, behind a token: textual-serve's aiohttp app, with a middleware
in front of every route it serves (the page, the websocket that runs a cockpit per browser
session, the static files, the downloads) that answers 403 with nothing unless the request
carries the token. Bound to 127.0.0.1 only.

The page is opened with `?token=...`; its answer sets an HttpOnly, SameSite=Strict cookie
with the token, which the page's static files and its websocket then carry (textual.js builds
the websocket URL itself, so the token cannot ride in it). A request whose Origin is not the
server's own is refused too: another page on this machine (any port of 127.0.0.1 counts as
the same site for cookies) must not open a cockpit with the person's cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from textual_serve.server import Server

HOST = "127.0.0.1"
SHUTDOWN_S = 5.0  # how long the cockpits get to quit once the server is told to stop

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


class TokenGuard:
    """The aiohttp middleware: the token (query or cookie) and our own Origin, or a bare 403."""

    __middleware_version__ = 1  # what @web.middleware marks: called (request, handler)

    def __init__(self, token: str) -> None:
        self._token = token
        self.origin = ""  # http://127.0.0.1:PORT, once bound
        self.cookie = ""

    def bind(self, port: int) -> None:
        self.origin = f"http://{HOST}:{port}"
        self.cookie = f"agentdeck_web_{port}"  # cookies ignore ports: one per server

    def url(self) -> str:
        """The page's address with the token, for the person to open."""
        return f"{self.origin}/?token={self._token}"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.origin:
            return web.Response(status=403)
        from_query = request.query.get("token")
        given = from_query if from_query is not None else request.cookies.get(self.cookie)
        if given is None or not _same(given, self._token):
            return web.Response(status=403)
        response = await handler(request)
        if not response.prepared:  # a websocket has answered already
            response.headers["Referrer-Policy"] = "no-referrer"  # the page's URL holds the token
            if from_query is not None:
                response.set_cookie(self.cookie, self._token, httponly=True, samesite="Strict", path="/")
        return response


class GuardedServer(Server):
    """textual-serve's server with the guard in front and a shutdown that ends the cockpits."""

    def __init__(self, command: str, token: str, title: str) -> None:
        super().__init__(command, host=HOST, port=0, title=title)
        self.guard = TokenGuard(token)
        self._sessions: set[asyncio.Task[object]] = set()

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self.guard)
        return app

    async def on_startup(self, app: web.Application) -> None:
        """Quiet: `agentdeck web` prints its own line (textual-serve prints a banner)."""

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            return await super().handle_websocket(request)
        finally:
            self._sessions.discard(task)

    async def on_shutdown(self, app: web.Application) -> None:
        """Each browser session's cockpit is told to quit (textual-serve's own cleanup, on
        cancellation), so that no `attach` outlives the server."""
        sessions = list(self._sessions)
        for task in sessions:
            task.cancel()
        if sessions:
            await asyncio.wait(sessions, timeout=SHUTDOWN_S)

    async def run(self, port: int, ready: Callable[[str], None]) -> None:
        """Serve until SIGTERM or SIGINT; `ready` gets the URL with the token once bound."""
        runner = web.AppRunner(await self._make_app(), handle_signals=False, shutdown_timeout=SHUTDOWN_S,
                               access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, port)
            await site.start()
            bound = runner.addresses[0][1]  # the port the system gave, for --port 0
            self.port = bound
            self.public_url = f"http://{HOST}:{bound}"
            self.guard.bind(bound)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            ready(self.guard.url())
            await stop.wait()
        finally:
            await runner.cleanup()
