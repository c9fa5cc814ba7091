"""`agentdeck bench recall`: does recall find a memory when the task says it in other words?

A fixed set of memories (what the crew's agents write: reflections, facts) and queries
that each mean one of them, mostly in other words ("storage is running out" for a
reflection about a full disk), some sharing a word or two. Each query is recalled twice
from the same real database file: by FTS5 alone (recall as it is without an embedder) and
hybrid (FTS5 fused with the nearest in meaning). The figure is hit@3: the share of queries
whose memory is among the three recalled. All entries have the same age and importance, so
relevance alone decides. Deterministic: one round says it all.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import msgspec

from agents.crew.recall import query_vector, recall
from agents.memory.convert import MODEL_NAME, ensure_embedding_model
from agents.memory.embedder import Embedder
from agents.memory.indexer import embedding_bytes
from agents.protocol import SYSTEM
from agents.store import Store, queries
from agents.store import reducers as r
from agents.store.reducers.memory import write_memory_vectors
from app.bench import harness
from app.context import Context
from app.render import print_json

HELP = "recall by meaning: hit@3 of paraphrased queries, FTS5 alone vs hybrid"

AGENT = "ops"
TOP = 3
MEMORIES: dict[str, str] = {
    "disk": "Reflection: the root filesystem was 100% full; deleting old logs in /var/log freed 4 GB",
    "backup": "the nightly backup is a cron job at 02:00 that copies ~/projects to the NAS",
    "nginx": "nginx picks up a new config with `nginx -s reload`; no restart needed",
    "python": "python3 lives at /usr/bin/python3; the project's venv is .venv",
    "memory": "Reflection: the machine swapped heavily because two llama servers each held 6 GB of RAM",
    "cpu": "load average stayed above 8 on the 2-core box while the test suite ran",
    "network": "DNS lookups failed because /etc/resolv.conf pointed at a dead nameserver",
    "git": "never force-push to main; open a branch and a pull request",
    "tests": "make test runs ruff first, then pytest with a 120 s timeout per test",
    "ssh": "the deploy key for the server is ~/.ssh/deploy_ed25519, passphrase in the keyring",
    "docker": "docker images piled up; `docker system prune` reclaimed 12 GB",
    "timezone": "the server clock is UTC; the person works in Europe/Berlin",
    "certificate": "the TLS certificate for the site expires on the 1st; certbot renews it",
    "permissions": "a write to /etc failed with EACCES: agents run without root",
    "port": "port 8080 was already taken by a stale dev server; killed it",
    "editor": "the person prefers 4-space indents and black-formatted Python",
}
QUERIES: list[tuple[str, str]] = [
    ("storage is running out", "disk"),
    ("how much space is left on the drive?", "disk"),
    ("are my files being saved somewhere safe every night?", "backup"),
    ("the web server needs to pick up its new settings", "nginx"),
    ("which interpreter should scripts use?", "python"),
    ("the computer is slow and out of RAM", "memory"),
    ("the processor is overloaded", "cpu"),
    ("hostnames do not resolve", "network"),
    ("can I overwrite the history of the main branch?", "git"),
    ("how do I run the checks before committing?", "tests"),
    ("how do I log in to the production machine?", "ssh"),
    ("container images take up too much room", "docker"),
    ("what time is it for the user?", "timezone"),
    ("https will stop working soon", "certificate"),
    ("permission denied when editing system files", "permissions"),
    ("address already in use when starting the app", "port"),
    ("how should code be formatted?", "editor"),
]


class QueryResult(msgspec.Struct, kw_only=True):
    query: str
    wants: str
    fts5: list[str]  # the memories recalled, best first
    hybrid: list[str]


class Report(msgspec.Struct, kw_only=True):
    model: str
    queries: int
    hit_at_3_fts5: float
    hit_at_3_hybrid: float
    embed_ms_per_query: float
    results: list[QueryResult]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_common(parser)


async def measure(db_path: Path, embedder: Embedder) -> Report:
    names: dict[int, str] = {}
    with Store.open(db_path, [AGENT]) as store:
        for name, text in MEMORIES.items():
            names[store.write(r.write_memory, AGENT, text).id] = name
        now = time.time()
        store.conn.execute("UPDATE memory SET created_at = ?", (now,))
        pending = store.read(queries.memories_without_vectors, MODEL_NAME, len(MEMORIES))
        vectors = await embedder.embed([m.content for m in pending])
        store.write(write_memory_vectors, SYSTEM, MODEL_NAME,
                    [(m.id, embedding_bytes(v)) for m, v in zip(pending, vectors, strict=True)])
        results, embed_s = [], 0.0
        for text, wants in QUERIES:
            started = time.perf_counter()
            embedding = await query_vector(embedder, text)
            embed_s += time.perf_counter() - started
            if embedding is None:
                raise RuntimeError("the embedder gave no vector for a query")
            words = store.read(recall, text, AGENT, half_life_days=14, limit=TOP, now=now)
            both = store.read(recall, text, AGENT, half_life_days=14, limit=TOP, now=now,
                              query_embedding=embedding)
            results.append(QueryResult(query=text, wants=wants, fts5=[names[m.id] for m in words],
                                       hybrid=[names[m.id] for m in both]))
    n = len(results)
    return Report(model=MODEL_NAME, queries=n,
                  hit_at_3_fts5=sum(q.wants in q.fts5 for q in results) / n,
                  hit_at_3_hybrid=sum(q.wants in q.hybrid for q in results) / n,
                  embed_ms_per_query=embed_s / n * 1000, results=results)


async def _run() -> Report:
    embedder = Embedder(ensure_embedding_model)
    await embedder.start()
    try:
        with tempfile.TemporaryDirectory(prefix="agentdeck-bench-") as tmp:
            return await measure(Path(tmp) / "agentdeck.db", embedder)
    finally:
        embedder.close()


def run(_ctx: Context, args: argparse.Namespace) -> int:
    report = asyncio.run(_run())
    if args.json:
        print_json(report)
        return 0
    print(f"recall of {report.queries} paraphrased queries over {len(MEMORIES)} memories ({report.model}); "
          f"hit@{TOP}: is the memory meant among the {TOP} recalled")
    print(f"{'query':<54} {'wants':<12} {'FTS5':>5} {'hybrid':>7}")
    for q in report.results:
        print(f"{q.query[:53]:<54} {q.wants:<12} {'hit' if q.wants in q.fts5 else '-':>5} "
              f"{'hit' if q.wants in q.hybrid else '-':>7}")
    print(f"{'hit@3':<67} {report.hit_at_3_fts5:>5.0%} {report.hit_at_3_hybrid:>7.0%}")
    print(f"query embedding: {report.embed_ms_per_query:.1f} ms each, one thread")
    return 0
