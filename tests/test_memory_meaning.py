"""Memory that finds by meaning: the converted embedding model, the embedder, the vectors
in the database, the indexer and hybrid recall. Real model, real llama.cpp, real sqlite-vec."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import AGENTS
from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
from agents.crew.recall import query_vector, recall, recall_by_meaning
from agents.memory.convert import MODEL_NAME, convert, read_safetensors, source_zip
from agents.memory.embedder import Embedder, _Model, embedder_for
from agents.memory.indexer import embedding_bytes
from agents.protocol import SYSTEM
from agents.runtime import Host
from agents.runtime import host as host_module
from agents.store import Store, queries
from agents.store import reducers as r
from agents.store.database import load_vector_functions
from agents.store.reducers.memory import write_memory_vectors

SENTENCES = [
    "The disk is full: / has 0 bytes free.",
    "storage is running out",
    "Hello world!",
    "unaffable tokenization of Zürich's café, 42 times",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("embedding-models")
    return {p: convert(out / f"minilm.{p}.gguf", p) for p in ("f32", "q8_0")}


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    with zipfile.ZipFile(source_zip()) as zf:
        return {k: v.astype(np.float64) for k, v in read_safetensors(zf.read("model.safetensors")).items()}


def _reference(ids: list[int], w: dict[str, np.ndarray]) -> np.ndarray:
    """all-MiniLM-L6-v2 in numpy (fp64), straight from the original safetensors: BERT
    encoder, mean pooling, unit length — what sentence-transformers computes."""
    def norm(x: np.ndarray, p: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[f"{p}.weight"] + w[f"{p}.bias"]

    def linear(x: np.ndarray, p: str) -> np.ndarray:
        return x @ w[f"{p}.weight"].T + w[f"{p}.bias"]

    erf = np.vectorize(math.erf)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:len(ids)]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "embeddings.LayerNorm")
    for layer in range(6):
        p = f"encoder.layer.{layer}."
        q, k, v = (linear(x, p + f"attention.self.{n}").reshape(-1, 12, 32).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(32)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(1, 0, 2).reshape(-1, 384)
        x = norm(x + linear(attended, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = norm(x + linear(h, p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.mark.timeout(180)
def test_the_converted_model_loads_in_llama_cpp_and_agrees_with_the_original(converted, weights) -> None:
    with zipfile.ZipFile(source_zip()) as zf:
        vocab = json.loads(zf.read("tokenizer.json"))["model"]["vocab"]
    assert converted["q8_0"].stat().st_size < 26 << 20  # 24 MiB, a quarter of fp32
    assert converted["q8_0"].stat().st_mode & 0o077 == 0
    for precision, floor in (("f32", 0.99999), ("q8_0", 0.999)):
        model = _Model(converted[precision])
        try:
            # WordPiece as BERT does it: lower case, accents stripped, [CLS] … [SEP].
            assert model.tokens("The disk is FULL") == [vocab[t] for t in
                                                        ("[CLS]", "the", "disk", "is", "full", "[SEP]")]
            for sentence in SENTENCES:
                ids = model.tokens(sentence)
                ours = model.embed_one(sentence)
                assert ours.shape == (384,)
                assert abs(float(np.linalg.norm(ours)) - 1) < 1e-4
                assert float(ours @ _reference(ids, weights)) >= floor, (precision, sentence)
        finally:
            model.close()


@pytest.mark.timeout(120)
async def test_the_embedder_runs_off_the_loop_and_ranks_a_paraphrase_first(converted) -> None:
    embedder = Embedder(converted["q8_0"])
    await embedder.start()
    try:
        disk, cat, query = await embedder.embed(
            ["Reflection: the disk filled up, / had no free space left", "the cat sat on the mat",
             "storage is running out"])
        assert float(query @ disk) > float(query @ cat) + 0.2
    finally:
        embedder.close()
    with pytest.raises(Exception, match="not running"):
        await embedder.embed(["x"])


# --- the vectors in the database, hybrid recall, the indexer ---

DAY = 86_400.0
MEMORIES = [
    ("ops", "Reflection: the root filesystem filled up to 100%; cleaned /var/log to get free space back"),
    ("ops", "the backup job runs every night at 2am from cron"),
    ("ops", "nginx reloads its config with a SIGHUP, no restart needed"),
    ("ops", "python3 is at /usr/bin/python3 on this machine"),
]


async def _index_directly(store: Store, embedder: Embedder) -> None:
    memories = store.read(queries.memories_without_vectors, MODEL_NAME, 100)
    vectors = await embedder.embed([m.content for m in memories])
    store.write(write_memory_vectors, SYSTEM, MODEL_NAME, [(m.id, embedding_bytes(v))
                                                           for m, v in zip(memories, vectors, strict=True)])


@pytest.mark.timeout(120)
async def test_a_paraphrase_finds_the_memory_by_meaning_where_words_alone_do_not(converted, db_path: Path) -> None:
    embedder = Embedder(converted["q8_0"])
    await embedder.start()
    try:
        with Store.open(db_path, AGENTS) as store:  # a real database file, sqlite-vec loaded
            ids = [store.write(r.write_memory, agent, text).id for agent, text in MEMORIES]
            await _index_directly(store, embedder)
            query = "storage is running out"
            words = store.read(recall, query, "ops", half_life_days=14, limit=3)
            both = store.read(recall, query, "ops", half_life_days=14, limit=3,
                              query_embedding=await query_vector(embedder, query))
            near = store.read(queries.memory_nearest, await query_vector(embedder, query), agent="ops", limit=2)
    finally:
        embedder.close()
    assert ids[0] not in [m.id for m in words]  # no word in common with the reflection
    assert [m.id for m in both][:1] == [ids[0]]
    assert near is not None and near[0][0].id == ids[0] and near[0][1] > near[1][1]


def test_recall_fuses_both_rankings_then_weighs_recency_and_importance() -> None:
    from agents.crew.recall import RRF_K, fuse
    from agents.protocol import Memory

    a, b, c = (Memory(id=i, agent="ops", scope="private", kind="fact", content=str(i), tags=[], importance=3,
                      task_id=None, compacted_into=None, created_at=0.0) for i in (1, 2, 3))
    fused = dict((m.id, s) for m, s in fuse([a, b], [b, c]))
    assert fused[2] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))  # in both: first
    assert fused[2] > fused[1] > fused[3]


@pytest.mark.timeout(120)
async def test_memories_written_before_the_indexer_started_get_indexed_and_new_ones_follow(
        converted, db_path: Path, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "ensure_embedding_model", lambda: converted["q8_0"])
    with Store.open(db_path, AGENTS) as store:  # written while no instance ran
        before = [store.write(r.write_memory, agent, text).id for agent, text in MEMORIES]
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
    async with Host(db_path, config, backend=ScriptedBackend(queued({})), crew=True) as host:  # type: ignore[arg-type]
        indexer = host.memory_indexer
        assert indexer is not None
        await asyncio.wait_for(indexer.caught_up.wait(), 60)
        assert await host.store.read(_indexed_ids) == set(before)
        # A memory written now, by anyone, through the ordinary reducer: the bus brings it.
        later = await host.store.write(r.write_memory, "dev", "the laptop's SSD has no space left at all",
                                       scope="shared")
        await asyncio.wait_for(indexer.wait_indexed(len(before) + 1), 30)
        assert await host.store.read(_indexed_ids) == {*before, later.id}
        embedder = embedder_for(host.store)
        assert embedder is not None
        found = await recall_by_meaning(host.store, embedder, "the disk is nearly full", "ops", half_life_days=14,
                                        limit=3)
        assert {before[0], later.id} <= {m.id for m in found}
    assert embedder_for(host.store) is None  # detached at shutdown
    assert not embedder.ready


def _indexed_ids(conn: sqlite3.Connection) -> set[int]:
    return {row[0] for row in conn.execute("SELECT memory_id FROM memory_vectors")}


def _unit(i: int) -> bytes:
    """A 384-float vector pointing along axis i, in sqlite-vec's float32 format."""
    return struct.pack("<384f", *(1.0 if k == i else 0.0 for k in range(384)))


@pytest.mark.timeout(60)
def test_without_sqlite_vec_the_store_works_and_ranks_by_meaning_all_the_same(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where sqlite-vec cannot be loaded (the package missing, or a Python that cannot load
    SQLite extensions, as pyenv's default build) the same SQL ranks through a Python
    vec_distance_cosine, and agrees with sqlite-vec where both exist."""
    with Store.open(db_path, AGENTS) as store:
        native = load_vector_functions(store.conn)
        kept = store.write(r.write_memory, "ops", "the disk is full")
        other = store.write(r.write_memory, "ops", "the backups ran")
        gone = store.write(r.write_memory, "ops", "the disk was cleaned")
        store.write(write_memory_vectors, SYSTEM, MODEL_NAME,
                    [(kept.id, _unit(0)), (other.id, _unit(1)), (gone.id, _unit(2))])
        by_sqlite_vec = store.read(queries.memory_nearest, _unit(0), agent="ops") if native else None
    monkeypatch.setitem(sys.modules, "sqlite_vec", None)  # import sqlite_vec now fails
    fresh = db_path.with_name("fresh.db")
    for path in (db_path, fresh):
        with Store.open(path, AGENTS) as store:  # migrates (fresh) and opens all the same
            assert not load_vector_functions(store.conn)
            if path == fresh:
                memory = store.write(r.write_memory, "ops", "the disk is full")
                assert store.read(queries.memory_nearest, _unit(0), agent="ops") == []  # no vectors yet
                found = store.read(recall, "disk full", "ops", half_life_days=14, query_embedding=_unit(0))
                assert memory.id in [m.id for m in found]  # by words
                continue
            nearest = store.read(queries.memory_nearest, _unit(0), agent="ops")
            assert [(m.id, round(sim, 6)) for m, sim in nearest][:1] == [(kept.id, 1.0)]
            assert {round(sim, 6) for _, sim in nearest[1:]} == {0.0}  # orthogonal: nothing alike
            if by_sqlite_vec is not None:  # the Python distance agrees with sqlite-vec's
                assert [(m.id, round(s, 6)) for m, s in nearest] == [(m.id, round(s, 6)) for m, s in by_sqlite_vec]
            store.write(r.delete_memory, "ops", gone.id)  # its vector goes with it
            assert store.read(_indexed_ids) == {kept.id, other.id}


@pytest.mark.timeout(120)
async def test_the_recall_bench_finds_more_by_meaning_than_by_words(converted, tmp_path: Path) -> None:
    from app.bench.recall import QUERIES, measure

    embedder = Embedder(converted["q8_0"])
    await embedder.start()
    try:
        report = await measure(tmp_path / "bench.db", embedder)
    finally:
        embedder.close()
    assert report.queries == len(QUERIES)
    first = report.results[0]
    assert (first.query, first.wants in first.fts5, first.wants in first.hybrid) == \
        ("storage is running out", False, True)
    assert report.hit_at_3_hybrid >= report.hit_at_3_fts5 + 0.3


@pytest.mark.timeout(120)
async def test_an_embedding_call_that_overruns_its_timeout_is_abandoned_and_the_next_one_works(converted) -> None:
    embedder = Embedder(converted["q8_0"])
    await embedder.start()
    try:
        with pytest.raises(TimeoutError):  # two texts of 512 tokens: far more than a millisecond
            await embedder.embed(["the disk is full " * 200] * 2, timeout_s=0.001)
        (vector,) = await embedder.embed(["the disk is full"])
        assert vector.shape == (384,)
    finally:
        embedder.close()
