"""What an agent remembers for a task: FTS5 relevance × recency × importance.

Relevance is SQLite's bm25 for the task's words; recency halves every
`memory_half_life_days`; importance is the 1–5 the agent gave the entry. The best few
entries go into the prompt, within a character budget.
"""

from __future__ import annotations

import math
import sqlite3
import time

from agents.protocol import Memory
from agents.store import queries

CANDIDATES = 50
BUDGET_CHARS = 1200


def score(relevance: float, age_s: float, importance: int, half_life_s: float) -> float:
    recency = math.pow(0.5, max(age_s, 0.0) / half_life_s)
    return max(relevance, 1e-6) * recency * (importance / 5)


def recall(conn: sqlite3.Connection, text: str, agent: str, *, half_life_days: float, limit: int = 3,
           now: float | None = None) -> list[Memory]:
    now = time.time() if now is None else now
    half_life_s = half_life_days * 86_400
    found = queries.memory_matches(conn, text, agent=agent, limit=CANDIDATES)
    ranked = sorted(found, key=lambda mr: score(mr[1], now - mr[0].created_at, mr[0].importance, half_life_s),
                    reverse=True)
    chosen: list[Memory] = []
    used = 0
    for memory, _ in ranked:
        if len(chosen) == limit or used + len(memory.content) > BUDGET_CHARS:
            break
        chosen.append(memory)
        used += len(memory.content)
    return chosen
