"""Sentences to vectors: all-MiniLM-L6-v2 run by llama.cpp in embedding mode.

The model has its own small context on its own single thread: the event loop never runs
it, and the crew's engine keeps every core it had. Every call has a timeout; a call that
overruns is abandoned by its caller (the thread finishes it; native code cannot be
interrupted) and the next call queues behind it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agents.memory.convert import DIMENSIONS

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

T = TypeVar("T")

N_CTX = 512  # the model's trained context; a longer text is cut to it
START_TIMEOUT_S = 60.0  # converting on first use takes seconds; loading well under one
EMBED_TIMEOUT_S = 30.0  # per call


class EmbedderUnavailable(Exception):
    """The model could not be loaded, or the embedder is closed."""


class _Model:
    """The llama.cpp model and context. Only ever touched from the embedder's thread."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        from agents.inference.model import init_backend

        init_backend()
        self.lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0  # 24 MiB: the accelerator, if any, is the crew's
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise EmbedderUnavailable(f"llama.cpp could not load {path}")
        self.ctx = None
        self.batch = None
        try:
            self.vocab = llama_cpp.llama_model_get_vocab(self.model)
            self.n_embd = int(llama_cpp.llama_model_n_embd(self.model))
            if self.n_embd != DIMENSIONS:
                raise EmbedderUnavailable(f"{path}: {self.n_embd} dimensions, expected {DIMENSIONS}")
            self.sep = int(llama_cpp.llama_vocab_sep(self.vocab))
            cp = llama_cpp.llama_context_default_params()
            cp.n_ctx = cp.n_batch = cp.n_ubatch = N_CTX  # non-causal: a text is one ubatch
            cp.n_seq_max = 1
            cp.n_threads = cp.n_threads_batch = 1
            cp.embeddings = True
            cp.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
            if not self.ctx:
                raise EmbedderUnavailable("llama.cpp could not make an embedding context")
            self.batch = llama_cpp.llama_batch_init(N_CTX, 0, 1)
        except BaseException:
            self.close()
            raise

    def tokens(self, text: str) -> list[int]:
        data = text.encode("utf-8", "replace")
        buf = (self.lib.llama_token * (len(data) + 8))()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, False)
        if n < 0:  # cannot happen with a buffer this long; said plainly if it does
            raise ValueError(f"tokenizing needs {-n} tokens")
        ids = list(buf[:n])
        if len(ids) > N_CTX:
            ids = [*ids[:N_CTX - 1], self.sep]
        return ids

    def embed_one(self, text: str) -> np.ndarray:
        import numpy as np

        ids = self.tokens(text)
        batch = self.batch
        batch.n_tokens = len(ids)
        for i, token in enumerate(ids):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True
        if self.lib.llama_encode(self.ctx, batch) != 0:
            raise RuntimeError("llama.cpp could not embed the text")
        ptr = self.lib.llama_get_embeddings_seq(self.ctx, 0)
        if not ptr:
            raise RuntimeError("llama.cpp returned no pooled embedding")
        vector = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                       shape=(self.n_embd,)).astype(np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


class Embedder:
    """`await embedder.start()`, then `await embedder.embed(texts)`; `close()` at the end.

    `model` is a GGUF path, or a callable that returns one (run on the embedder's thread:
    converting on first use must not block the loop)."""

    def __init__(self, model: Path | Callable[[], Path], *, timeout_s: float = EMBED_TIMEOUT_S) -> None:
        self._source = model
        self.timeout_s = timeout_s
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._model: _Model | None = None
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._model is not None and not self._closed

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:
                future.set_exception(err)
        if self._model is not None:
            self._model.close()
            self._model = None

    async def _call(self, fn: Callable[[], T], timeout_s: float) -> T:
        if self._closed or self._thread is None:
            raise EmbedderUnavailable("the embedder is not running")
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Load the model on the embedder's thread. Raises EmbedderUnavailable."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True, name="agentdeck-embedder")
            self._thread.start()

        def load() -> None:
            # Set here, on the thread: a caller that gave up waiting still leaves the model
            # where the thread frees it at close.
            path = self._source() if callable(self._source) else self._source
            self._model = _Model(Path(path))

        try:
            await self._call(load, timeout_s)
        except (EmbedderUnavailable, TimeoutError):
            raise
        except Exception as err:
            raise EmbedderUnavailable(f"{type(err).__name__}: {err}") from err

    async def embed(self, texts: Sequence[str], timeout_s: float | None = None) -> list[np.ndarray]:
        """One unit vector per text, in order. Raises EmbedderUnavailable or TimeoutError."""
        model = self._model
        if model is None or self._closed:
            raise EmbedderUnavailable("the embedder is not running")
        items = list(texts)
        return await self._call(lambda: [model.embed_one(t) for t in items], timeout_s or self.timeout_s)

    def close(self) -> None:
        """Free the model on its thread once queued work ends; never waits."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)


# The embedder serving each open store (the host attaches its own): recall finds it by the
# store it reads, so nothing between the host and the runner carries it.
_SERVING: weakref.WeakKeyDictionary[object, Embedder] = weakref.WeakKeyDictionary()


def attach(store: object, embedder: Embedder) -> None:
    _SERVING[store] = embedder


def detach(store: object) -> None:
    _SERVING.pop(store, None)


def embedder_for(store: object) -> Embedder | None:
    """The ready embedder serving `store`, if any."""
    embedder = _SERVING.get(store)
    return embedder if embedder is not None and embedder.ready else None
