"""What an agent remembers for a task: FTS5 relevance × recency × importance.

Relevance is SQLite's bm25 for the task's words; recency halves every
`memory_half_life_days`; importance is the 1–5 the agent gave the entry. The runner
takes the best few that fit its token budget (`within`).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Awaitable, Callable

from agents.protocol import Memory
from agents.store import queries

CANDIDATES = 50
QUERY_WORDS = 128  # the task's first distinct words asked of the index (a 10 MB body made a million)
QUERY_CHARS = 8000  # read for them, at most


def score(relevance: float, age_s: float, importance: int, half_life_s: float) -> float:
    recency = math.pow(0.5, max(age_s, 0.0) / half_life_s)
    return max(relevance, 1e-6) * recency * (importance / 5)


def recall(conn: sqlite3.Connection, text: str, agent: str, *, half_life_days: float, limit: int = 8,
           now: float | None = None) -> list[Memory]:
    """The `limit` best entries the agent may see, best first."""
    now = time.time() if now is None else now
    half_life_s = half_life_days * 86_400
    words = dict.fromkeys("".join(c if c.isalnum() else " " for c in text[:QUERY_CHARS]).split())
    query = " ".join(list(words)[:QUERY_WORDS])
    found = queries.memory_matches(conn, query, agent=agent, limit=CANDIDATES)
    ranked = sorted(found, key=lambda mr: score(mr[1], now - mr[0].created_at, mr[0].importance, half_life_s),
                    reverse=True)
    return [memory for memory, _ in ranked[:limit]]


async def within(memories: list[Memory], budget_tokens: int, count: Callable[[str], Awaitable[int]],
                 most: int = 3) -> list[Memory]:
    """The best entries, in order, while they fit `budget_tokens` (the model's tokens)."""
    chosen: list[Memory] = []
    used = 0
    for memory in memories:
        size = await count(memory.content)
        if len(chosen) == most or used + size > budget_tokens:
            break
        chosen.append(memory)
        used += size
    return chosen
