"""The token ledger: what the model calls took, grouped by agent, task (a job with its
subtasks), day or backend/model, priced where the config names a price for the model;
and a task's tokens so far, for the cockpit. Each read is one query on the store's thread."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from agents.config.schema import PriceConfig
from agents.errors import InvalidArgument
from agents.safe_text import safe_text

GroupBy = Literal["agent", "task", "day", "model"]
GROUPS: tuple[GroupBy, ...] = ("agent", "task", "day", "model")
NO_TASK = "(no task)"  # calls made outside any task (the router, compaction)
UNKNOWN = "-"  # a backend or model not recorded (rows from before schema v10)
MAX_AGE_DAYS = 100 * 366  # an age in --since beyond this is a typo


class UsageRow(msgspec.Struct, kw_only=True):
    """One group's totals. `cost`: currency -> amount, over the calls whose model has a
    price (empty: none had one)."""

    group: str  # the agent, the root task's '#id title', the day, or 'backend/model'
    task_id: int | None = None  # --by task: the root task (None: calls outside tasks)
    backend: str | None = None  # --by model
    model: str | None = None  # --by model
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    queue_s: float = 0.0
    decode_s: float = 0.0
    cost: dict[str, float] = msgspec.field(default_factory=dict)


class TaskTokens(msgspec.Struct, frozen=True, kw_only=True):
    """A task's tokens so far, its subtasks' included."""

    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    subtasks: int = 0


# --- --since ---------------------------------------------------------------------------------

_AGE = re.compile(r"([0-9]{1,7})([hdw])")
_HOURS = {"h": 1, "d": 24, "w": 24 * 7}


def parse_since(text: str, now: float | None = None) -> float:
    """A start time from `2026-12-01` (local midnight) or an age: `24h`, `7d`, `2w`."""
    now = time.time() if now is None else now
    age = _AGE.fullmatch(text)
    if age:
        hours = int(age[1]) * _HOURS[age[2]]
        if hours > MAX_AGE_DAYS * 24:
            raise InvalidArgument(f"--since: {safe_text(text)} is too long ago", exit_code=2)
        return now - hours * 3600.0
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        try:
            return dt.datetime.strptime(text, "%Y-%m-%d").timestamp()  # local midnight
        except (ValueError, OverflowError, OSError):
            pass
    raise InvalidArgument(f"--since: expected a date (2026-12-01) or an age (24h, 7d, 2w), "
                          f"got {safe_text(text)!r}", exit_code=2)


# --- the ledger ------------------------------------------------------------------------------

_SUMS = ("count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(cached_tokens), 0), "
         "coalesce(sum(completion_tokens), 0), coalesce(sum(queue_s), 0), coalesce(sum(decode_s), 0)")

# Each usage row's task mapped to its root (the job a person asked for); a task the walk
# from the roots does not reach (a damaged tree) stands for itself.
_ROOTS = ("WITH RECURSIVE root(id, root_id) AS (SELECT id, id FROM tasks WHERE parent_id IS NULL "
          "UNION SELECT t.id, root.root_id FROM tasks t JOIN root ON t.parent_id = root.id), "
          "u AS (SELECT COALESCE(root.root_id, iu.task_id) AS g, iu.* FROM inference_usage iu "
          "LEFT JOIN root ON root.id = iu.task_id WHERE iu.ts >= ?) ")

_QUERIES: dict[GroupBy, str] = {
    "agent": f"SELECT agent, NULL, backend, model, {_SUMS} FROM inference_usage WHERE ts >= ? "
             "GROUP BY agent, backend, model ORDER BY agent",
    "task": f"{_ROOTS}SELECT u.g, t.title, backend, model, {_SUMS} FROM u LEFT JOIN tasks t ON t.id = u.g "
            "GROUP BY u.g, backend, model ORDER BY u.g IS NULL, u.g",
    "day": f"SELECT date(ts, 'unixepoch', 'localtime') AS d, NULL, backend, model, {_SUMS} "
           "FROM inference_usage WHERE ts >= ? GROUP BY d, backend, model ORDER BY d",
    "model": f"SELECT NULL, NULL, backend, model, {_SUMS} FROM inference_usage WHERE ts >= ? "
             "GROUP BY backend, model ORDER BY backend IS NULL, backend, model IS NULL, model",
}


def price_of(prices: Mapping[str, PriceConfig], model: str | None, prompt: int, cached: int,
             completion: int) -> tuple[str, float] | None:
    """(currency, amount) for these tokens of `model`, or None when it has no price.
    Cached prompt tokens are priced on their own (they are part of `prompt`)."""
    price = prices.get(model) if model is not None else None
    if price is None:
        return None
    amount = (max(0, prompt - cached) * price.prompt_per_mtok + cached * price.cached_per_mtok
              + completion * price.completion_per_mtok) / 1e6
    return price.currency, amount


def group_by(text: str) -> GroupBy:
    """`--by`, checked."""
    for group in GROUPS:
        if text == group:
            return group
    raise InvalidArgument(f"--by: one of {', '.join(GROUPS)}, got {safe_text(text)!r}", exit_code=2)


def usage(conn: sqlite3.Connection, by: GroupBy, since: float = 0.0,
          prices: Mapping[str, PriceConfig] | None = None) -> list[UsageRow]:
    """The ledger grouped `by`, over calls since `since` (seconds since the epoch)."""
    by = group_by(by)
    groups: dict[object, UsageRow] = {}
    for key, title, backend, model, calls, prompt, cached, completion, queue_s, decode_s in conn.execute(
            _QUERIES[by], (since,)):
        if by == "model":
            key = (backend, model)
        row = groups.get(key)
        if row is None:
            row = groups[key] = _new_row(by, key, title, backend, model)
        row.calls += calls
        row.prompt_tokens += prompt
        row.cached_tokens += cached
        row.completion_tokens += completion
        row.queue_s += queue_s
        row.decode_s += decode_s
        priced = price_of(prices or {}, model, prompt, cached, completion)
        if priced is not None:
            currency, amount = priced
            row.cost[currency] = row.cost.get(currency, 0.0) + amount
    return list(groups.values())


def _new_row(by: GroupBy, key: object, title: str | None, backend: str | None,
             model: str | None) -> UsageRow:
    if by == "task":
        if key is None:
            return UsageRow(group=NO_TASK)
        assert isinstance(key, int)
        return UsageRow(group=f"#{key} {title if title is not None else '(gone)'}", task_id=key)
    if by == "model":
        return UsageRow(group=f"{backend or UNKNOWN}/{model or UNKNOWN}", backend=backend, model=model)
    return UsageRow(group=str(key))


def total(rows: Sequence[UsageRow]) -> UsageRow:
    """Every group's totals together (the table's last line)."""
    out = UsageRow(group="total")
    for row in rows:
        out.calls += row.calls
        out.prompt_tokens += row.prompt_tokens
        out.cached_tokens += row.cached_tokens
        out.completion_tokens += row.completion_tokens
        out.queue_s += row.queue_s
        out.decode_s += row.decode_s
        for currency, amount in row.cost.items():
            out.cost[currency] = out.cost.get(currency, 0.0) + amount
    return out


def cost_text(cost: Mapping[str, float]) -> str:
    """`0.0123 USD`, several currencies joined with `+`, `-` when nothing was priced."""
    parts = [f"{amount:.4f} {safe_text(currency)}" for currency, amount in sorted(cost.items())]
    return " + ".join(parts) or "-"


# --- a task's tokens so far (the cockpit) ------------------------------------------------------


def tasks_tokens(conn: sqlite3.Connection, task_ids: Sequence[int]) -> dict[int, TaskTokens]:
    """Each task's tokens so far, its subtasks' included; one query for them all."""
    if not task_ids:
        return {}
    cur = conn.execute(
        "WITH RECURSIVE down(top, id) AS (SELECT t.id, t.id FROM tasks t "
        "WHERE t.id IN (SELECT value FROM json_each(?)) "
        "UNION SELECT down.top, t.id FROM tasks t JOIN down ON t.parent_id = down.id) "
        "SELECT d.top, count(DISTINCT d.id) - 1, count(u.id), coalesce(sum(u.prompt_tokens), 0), "
        "coalesce(sum(u.cached_tokens), 0), coalesce(sum(u.completion_tokens), 0) "
        "FROM down d LEFT JOIN inference_usage u ON u.task_id = d.id GROUP BY d.top",
        (msgspec.json.encode(sorted(set(task_ids))).decode(),),
    )
    return {top: TaskTokens(subtasks=subtasks, calls=calls, prompt_tokens=prompt, cached_tokens=cached,
                            completion_tokens=completion)
            for top, subtasks, calls, prompt, cached, completion in cur.fetchall()}


def task_tokens(conn: sqlite3.Connection, task_id: int) -> TaskTokens:
    return tasks_tokens(conn, [task_id]).get(task_id, TaskTokens())


def count(n: int) -> str:
    """A token count in a few characters: 950, 12.3k, 4.1M."""
    if n < 1000:
        return str(n)
    if n < 999_950:  # not '1000.0k'
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def tokens_line(tokens: TaskTokens) -> str:
    """`tokens: 12.3k prompt (8k cached) · 340 generated · 5 calls, 2 subtasks included`;
    empty when no call was made for it yet."""
    if not tokens.calls:
        return ""
    with_subtasks = f", {tokens.subtasks} subtask(s) included" if tokens.subtasks else ""
    return (f"tokens: {count(tokens.prompt_tokens)} prompt ({count(tokens.cached_tokens)} cached) · "
            f"{count(tokens.completion_tokens)} generated · {tokens.calls} call(s){with_subtasks}")


def pane_tokens(tokens: TaskTokens | None) -> str:
    """The short form an agent pane shows beside its task: `12.3k in (8k cached) 340 out`."""
    if tokens is None or not tokens.calls:
        return ""
    return (f"{count(tokens.prompt_tokens)} in ({count(tokens.cached_tokens)} cached) "
            f"{count(tokens.completion_tokens)} out")
