"""The webhook: one notification POSTed to `[notify] url`, retried with backoff.

ntfy format: the text as a plain-text body, the title in a `Title` header (RFC 2047
encoded when not ASCII, which ntfy reads). JSON format: {event, title, text, subject, ts}.
Configured headers may carry secrets: they are sent, never logged or recorded. A
connection failure, a timeout, HTTP 408, 429 or 5xx is retried (after 1 s, 2 s, 4 s, ...
times `backoff_s`); any other status is final. Each attempt is reported as it ends."""

from __future__ import annotations

import asyncio
import email.header
from collections.abc import Awaitable, Callable, Mapping

import httpx2
import msgspec

from agents.config.schema import NotifyConfig
from agents.notify.text import Note

MAX_BACKOFF_S = 300.0
RETRIED_STATUS = frozenset((408, 425, 429))


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    http_status: int | None  # None: no answer (refused, timed out)
    outcome: str  # "HTTP 500", "timed out", "connection refused"
    ok: bool
    final: bool  # no use trying again


def request_for(config: NotifyConfig, note: Note, headers: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
    """The headers and body of the POST."""
    sent = dict(headers)
    if config.format == "json":
        sent["Content-Type"] = "application/json"
        body = msgspec.json.encode({"event": note.event, "title": note.title, "text": note.text,
                                    "subject": note.subject, "ts": note.ts})
    else:
        sent["Content-Type"] = "text/plain; charset=utf-8"
        title = note.title
        sent["Title"] = title if title.isascii() else email.header.Header(title, "utf-8").encode()
        body = note.text.encode()
    return sent, body


async def attempt(client: httpx2.AsyncClient, config: NotifyConfig, note: Note,
                  headers: Mapping[str, str]) -> Attempt:
    sent, body = request_for(config, note, headers)
    try:
        response = await client.post(config.url, content=body, headers=sent, timeout=config.timeout_s)
    except httpx2.TimeoutException:
        return Attempt(http_status=None, outcome=f"timed out after {config.timeout_s:g} s", ok=False,
                       final=False)
    except httpx2.ConnectError as err:
        refused = _caused_by(err, ConnectionRefusedError)
        return Attempt(http_status=None, outcome="connection refused" if refused else "could not connect",
                       ok=False, final=False)
    except httpx2.HTTPError as err:  # a reset, a broken answer: the text may name the URL, so not shown
        return Attempt(http_status=None, outcome=f"failed ({type(err).__name__})", ok=False, final=False)
    status = response.status_code
    ok = 200 <= status < 300
    return Attempt(http_status=status, outcome=f"HTTP {status}", ok=ok,
                   final=ok or not (status >= 500 or status in RETRIED_STATUS))


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    """Is `kind` in the chain of causes (the HTTP client wraps the socket's error twice)?"""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def backoff(retry: int, base_s: float) -> float:
    """Before retry 1, 2, 3, ...: base, 2 base, 4 base, ... (at most MAX_BACKOFF_S)."""
    return min(base_s * 2 ** (retry - 1), MAX_BACKOFF_S)


async def deliver(client: httpx2.AsyncClient, config: NotifyConfig, note: Note, headers: Mapping[str, str], *,
                  backoff_s: float, on_attempt: Callable[[list[Attempt]], Awaitable[None]]) -> list[Attempt]:
    """Up to 1 + `config.retries` attempts; `on_attempt(all so far)` after each. The waits
    are plain sleeps: cancelling the task (a shutdown) ends them at once."""
    attempts: list[Attempt] = []
    for retry in range(config.retries + 1):
        if retry:
            await asyncio.sleep(backoff(retry, backoff_s))
        attempts.append(await attempt(client, config, note, headers))
        await on_attempt(attempts)
        if attempts[-1].final:
            break
    return attempts
