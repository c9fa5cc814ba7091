"""One way in for a request. The cockpit's composer, `agentdeck send`, a direct message
that becomes work and the crew's router all read a request the same way: a leading
`@agent` addresses it (an unknown name is an error, never a silent reroute), the title
is its first line without the address, shortened, and the body is the whole text."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from agents.errors import InvalidArgument
from agents.safe_text import shorten

TITLE_WIDTH = 120  # characters of a title made from a request's first line
MENTION = re.compile(r"(?<![\w@])@([a-z][a-z0-9_-]{0,31})\b")


class Request(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    body: str
    owner: str | None  # None: the router picks


def title_of(text: str, width: int = TITLE_WIDTH) -> str:
    """The first non-blank line, whitespace collapsed, at most `width` characters."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return shorten(first, width)


def read_request(text: str, agents: Sequence[str], *, to: str | None = None) -> Request:
    """A request as typed or sent. `to` (`send --to`) addresses it like a leading
    `@agent`; both at once must agree. InvalidArgument for an empty request or an
    unknown agent, naming the agents there are."""
    text = text.strip()
    if not text:
        raise InvalidArgument("nothing to send: the request is empty")
    owner, rest = to, text
    first = text.split(maxsplit=1)[0]
    if first.startswith("@") and len(first) > 1:
        named = first[1:]
        if named not in agents:
            raise InvalidArgument(f"unknown agent {named!r} (agents: {', '.join(agents)})", exit_code=2)
        if to is not None and named != to:
            raise InvalidArgument(f"the request is addressed to both {to} and @{named}", exit_code=2)
        owner, rest = named, text[len(first):].strip()
    if owner is not None and owner not in agents:
        raise InvalidArgument(f"unknown agent {owner!r} (agents: {', '.join(agents)})", exit_code=2)
    return Request(title=title_of(rest) or title_of(text), body=text, owner=owner)


def mentioned(title: str, body: str, agents: Sequence[str]) -> str | None:
    """The first `@agent` named anywhere in a task that is one of `agents`."""
    for name in MENTION.findall(f"{title}\n{body}"):
        if name in agents:
            return name
    return None


def route(title: str, body: str, agents: Sequence[str]) -> str:
    """Who gets an unassigned task without asking a model: the first `@agent`
    mentioned, else lead (else the first agent)."""
    return mentioned(title, body, agents) or ("lead" if "lead" in agents else agents[0])
