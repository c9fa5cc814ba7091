"""The host's memory indexer: every memory gets its vector, off the event loop.

It follows `memory.written` on the bus, so writers (tools, the runner's reflection) know
nothing of it; memories written while no indexer ran (the CLI, a crash, an older version)
are indexed when it starts. Vectors go in through a reducer like every write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agents.bus import Bus
from agents.memory.convert import MODEL_NAME
from agents.memory.embedder import Embedder, EmbedderUnavailable
from agents.protocol import SYSTEM, Memory, MemoryWritten
from agents.store import AsyncStore, EventFilter, queries
from agents.store.reducers.memory import write_memory_vectors

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

BATCH = 16  # memories embedded per call: a recall's query never waits long behind a batch


def embedding_bytes(vector: np.ndarray) -> bytes:
    """A vector as sqlite-vec stores it: little-endian float32."""
    import numpy as np

    return np.asarray(vector, dtype="<f4").tobytes()


class MemoryIndexer:
    def __init__(self, store: AsyncStore, bus: Bus, embedder: Embedder, *, model: str = MODEL_NAME) -> None:
        self.store = store
        self.bus = bus
        self.embedder = embedder
        self.model = model
        self.indexed = 0  # vectors written by this indexer
        self.caught_up = asyncio.Event()  # the backlog is done: every older memory has its vector
        self._wrote = asyncio.Event()

    async def run(self) -> None:
        """Index the backlog, then each new memory, until cancelled."""
        # Subscribed before the backlog is read: a memory written in between is in one or both.
        sub = await self.bus.subscribe(None, EventFilter(kinds=["memory.written"]), start="now")
        try:
            while backlog := await self.store.read(queries.memories_without_vectors, self.model, BATCH):
                await self._index(backlog)
            self.caught_up.set()
            async for event in sub:
                batch = [event]
                while len(batch) < BATCH and not sub.queue.empty():
                    batch.append(sub.queue.get_nowait())
                written = [e.payload.memory for e in batch if isinstance(e.payload, MemoryWritten)]
                try:
                    await self._index(written)
                except (EmbedderUnavailable, TimeoutError) as err:
                    # Left without a vector: the next start indexes it. Recall still finds
                    # it by its words meanwhile.
                    log.warning("memory indexing skipped %d entries: %s", len(written), err)
                sub.ack(batch[-1].id)
        finally:
            await sub.close()

    async def _index(self, memories: list[Memory]) -> None:
        if not memories:
            return
        vectors = await self.embedder.embed([m.content for m in memories])
        pairs = [(m.id, embedding_bytes(v)) for m, v in zip(memories, vectors, strict=True)]
        self.indexed += await self.store.write(write_memory_vectors, SYSTEM, self.model, pairs)
        self._wrote.set()

    async def wait_indexed(self, count: int) -> None:
        """Until this indexer has written `count` vectors (a test's or a bench's wait)."""
        while self.indexed < count:
            self._wrote.clear()
            await self._wrote.wait()
