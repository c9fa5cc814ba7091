"""What an agent remembers for a task: relevance × recency × importance.

Relevance fuses two rankings by reciprocal rank: FTS5's bm25 for the task's words, and
the entries nearest in meaning to the task (cosine between all-MiniLM-L6-v2 vectors, kept
beside the memories by the host's indexer), so "storage is running out" finds a reflection
about a full disk. Where there is no vector for the query (no embedder, sqlite-vec
missing) relevance is bm25 alone, as before. Recency halves every `memory_half_life_days`;
importance is the 1–5 the agent gave the entry. The runner takes the best few that fit its
token budget (`within`).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agents.memory.embedder import Embedder, EmbedderUnavailable
from agents.memory.indexer import embedding_bytes
from agents.protocol import Memory
from agents.store import queries

log = logging.getLogger(__name__)

CANDIDATES = 50
QUERY_WORDS = 128  # the task's first distinct words asked of the index (a 10 MB body made a million)
QUERY_CHARS = 8000  # read for them, at most
RRF_K = 60  # reciprocal rank fusion's constant: a rank's weight is 1 / (RRF_K + rank)
# Below this cosine an entry is not "near in meaning" (unrelated sentences score ~0–0.2 with
# this model): without the floor every recall would bring back whatever is least far.
MIN_SIMILARITY = 0.3
TIE_BREAK = 1e-6
QUERY_EMBED_TIMEOUT_S = 5.0  # a slow embedder costs recall its vector side, never the task


def score(relevance: float, age_s: float, importance: int, half_life_s: float) -> float:
    recency = math.pow(0.5, max(age_s, 0.0) / half_life_s)
    return max(relevance, 1e-6) * recency * (importance / 5)


def fuse(*rankings: list[Memory]) -> list[tuple[Memory, float]]:
    """Reciprocal rank fusion: each entry's Σ 1/(RRF_K + rank) over the rankings it is in."""
    fused: dict[int, tuple[Memory, float]] = {}
    for ranking in rankings:
        for rank, memory in enumerate(ranking, start=1):
            _, total = fused.get(memory.id, (memory, 0.0))
            fused[memory.id] = (memory, total + 1.0 / (RRF_K + rank))
    return list(fused.values())


def recall(conn: sqlite3.Connection, text: str, agent: str, *, half_life_days: float, limit: int = 8,
           now: float | None = None, query_embedding: bytes | None = None) -> list[Memory]:
    """The `limit` best entries the agent may see, best first. With `query_embedding` (the
    task's vector, see query_vector) the words' and the meaning's rankings are fused."""
    now = time.time() if now is None else now
    half_life_s = half_life_days * 86_400
    words = dict.fromkeys("".join(c if c.isalnum() else " " for c in text[:QUERY_CHARS]).split())
    query = " ".join(list(words)[:QUERY_WORDS])
    found = queries.memory_matches(conn, query, agent=agent, limit=CANDIDATES)
    near = None
    if query_embedding is not None:
        near = queries.memory_nearest(conn, query_embedding, agent=agent, limit=CANDIDATES)
    if near is not None:
        similarity = {memory.id: sim for memory, sim in near}
        meaning = [memory for memory, sim in near if sim >= MIN_SIMILARITY]
        # Equal fused ranks (a word-only hit on "is" beside the nearest in meaning) are
        # settled by meaning: the nudge is smaller than any step between two ranks.
        found = [(memory, rrf + TIE_BREAK * max(similarity.get(memory.id, 0.0), 0.0))
                 for memory, rrf in fuse([memory for memory, _ in found], meaning)]
    ranked = sorted(found, key=lambda mr: score(mr[1], now - mr[0].created_at, mr[0].importance, half_life_s),
                    reverse=True)
    return [memory for memory, _ in ranked[:limit]]


async def query_vector(embedder: Embedder | None, text: str) -> bytes | None:
    """The text's vector for recall, computed on the embedder's thread; None when there is
    no embedder or it fails (recall is then by words alone)."""
    if embedder is None:
        return None
    try:
        (vector,) = await embedder.embed([text[:QUERY_CHARS]], timeout_s=QUERY_EMBED_TIMEOUT_S)
    except (EmbedderUnavailable, TimeoutError, RuntimeError, ValueError) as err:
        log.warning("recall by meaning unavailable for this task: %s", err)
        return None
    return embedding_bytes(vector)


class _Reader(Protocol):
    async def read(self, query: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...


async def recall_by_meaning(store: _Reader, embedder: Embedder | None, text: str, agent: str, *,
                            half_life_days: float, limit: int = 8) -> list[Memory]:
    """recall, with the query's vector computed off the loop before the store is read."""
    embedding = await query_vector(embedder, text)
    return await store.read(recall, text, agent, half_life_days=half_life_days, limit=limit,
                            query_embedding=embedding)


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
