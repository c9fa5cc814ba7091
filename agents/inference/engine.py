"""The inference engine: one model, one llama context, N sequence slots, continuous batching.

Agents call `Engine.submit()` on the asyncio loop and get a `Generation`: an async iterator
of text pieces and an awaitable `Result`. A dedicated thread runs the `Scheduler`, which
owns llama.cpp.

Threads and queues:
- loop -> engine: `submit` puts the request on a bounded `queue.Queue` and sets a
  `threading.Event` that wakes the thread; cancelling sets a flag and the same event.
- engine -> loop: once per step the thread hands every loop one list of pieces and results
  via `loop.call_soon_threadsafe` into bounded per-request queues (see generation.py).
- the meter: the thread publishes an immutable snapshot after every step and, at most once
  a second, refreshes the NVML reading; `snapshot()` only reads those two references, so
  a stalled GPU driver can never block the caller (the asyncio loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import psutil

from agents.config import InferenceConfig, SamplingConfig
from agents.errors import ModelError
from agents.inference.chat import MessageLike, as_dicts
from agents.inference.generation import Generation
from agents.inference.gpu import GpuInfo, read_gpu
from agents.inference.grammar import schema_to_gbnf
from agents.inference.meter import EngineSnapshot, MeterSnapshot
from agents.inference.model import (
    LlamaModel,
    ProgressFn,
    fit_n_ctx,
    offloads_to_gpu,
    read_shape,
    resolve_model_path,
)
from agents.inference.scheduler import Scheduler, Seq
from agents.inference.types import Result, Usage

_GPU_CACHE_S = 1.0  # NVML readings are reused for this long

log = logging.getLogger("agents.inference")


class Engine:
    """The shared inference engine. Construct, `await start()`, `submit()`, `await stop()`.

    Constructing resolves and checks the model path (ModelError at once if it is missing or
    not GGUF); `start()` loads it on the engine thread. `progress`, if given, is called on
    the engine thread with 0.0 .. 1.0 while the model loads (Rich's Progress is thread-safe);
    `load_time_s` holds the load time afterwards.
    """

    def __init__(
        self,
        config: InferenceConfig,
        *,
        model_path: str | os.PathLike[str] | None = None,
        sampling: SamplingConfig | None = None,
        progress: ProgressFn | None = None,
        max_pending: int = 256,
    ) -> None:
        self.config: InferenceConfig = config  # the effective one once started (n_ctx fitted)
        self.model_path: Path = resolve_model_path(model_path, config.model)
        self.default_sampling = sampling or SamplingConfig()
        self.n_slots = max(1, config.slots)
        self.load_time_s: float | None = None
        self.chat_template_source: str | None = None  # "gguf" or "chatml-fallback"
        self._progress = progress
        self._inbox: queue.Queue[Seq] = queue.Queue(maxsize=max_pending)
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._load_error: BaseException | None = None
        self._orders = itertools.count(1)
        # The model, for counting tokens from other threads (llama_tokenize only reads the
        # vocabulary); the lock keeps the engine thread from freeing it mid-count.
        self._vocab_lock = threading.Lock()
        self._vocab_model: LlamaModel | None = None
        # (time.monotonic() of the reading, the reading): written by the engine thread only.
        self._gpu_cache: tuple[float, GpuInfo | None] = (0.0, None)
        self._snap = EngineSnapshot(
            ts=time.time(),
            state="starting",
            model=self.model_path.name,
            slots=[],
            waiting={},
            kv_used=0,
            kv_total=config.n_ctx,
            tokens_per_s=0.0,
            gpu_offload=False,
        )

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model on the engine thread; raise ModelError if it cannot be loaded."""
        await asyncio.to_thread(self.start_sync)

    def start_sync(self) -> None:
        """Blocking start, for code without a running loop."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="agentdeck-inference", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            self._thread.join()
            err = self._load_error
            if isinstance(err, ModelError):
                raise err
            raise ModelError(f"cannot start inference with {self.model_path}: {err}") from err

    async def stop(self) -> None:
        """Finish every request as cancelled, free llama.cpp, end the thread."""
        await asyncio.to_thread(self.stop_sync)

    def stop_sync(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._ready.is_set() and self._load_error is None and not self._stopping

    # --- requests ----------------------------------------------------------------------

    def submit(
        self,
        messages: Sequence[MessageLike],
        *,
        agent: str = "",
        sampling: SamplingConfig | None = None,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        priority: int = 0,
        timeout_s: float | None = None,
        deadline: float | None = None,
        ignore_eos: bool = False,
    ) -> Generation:
        """Queue a chat request. Call on the event loop; never blocks.

        sampling: temperature etc.; its max_tokens and timeout_s are the defaults for
        `max_tokens` and `timeout_s`; a timeout of 0 means inference.max_call_s (callers
        that know the prompt derive a fitter one from `snapshot().speed`). schema: a JSON
        schema the output must follow (a grammar for this sequence only). priority: higher
        is admitted first. deadline: time.monotonic() value; overrides timeout_s.
        ignore_eos: generate exactly max_tokens (benchmarks; ignored with a schema, whose
        grammar must end).
        Raises ValueError for bad arguments; engine trouble comes back as an 'error' result.
        """
        loop = asyncio.get_running_loop()
        s = sampling or self.default_sampling
        n_max = s.max_tokens if max_tokens is None else max_tokens
        if n_max < 1:
            raise ValueError("max_tokens must be >= 1")
        msgs = as_dicts(messages)
        gbnf = schema_to_gbnf(schema) if schema is not None else None
        now = time.monotonic()
        if deadline is None:
            seconds = s.timeout_s if timeout_s is None else timeout_s
            deadline = now + (seconds if seconds > 0 else self.config.max_call_s)
        gen = Generation(loop, n_max, self._wake, deadline=deadline, agent=agent)
        seq = Seq(
            gen=gen,
            messages=msgs,
            agent=agent,
            priority=priority,
            deadline=deadline,
            max_tokens=n_max,
            stops=tuple(stop),
            ignore_eos=ignore_eos and gbnf is None,
            sampling=s,
            gbnf=gbnf,
            order=next(self._orders),
            submitted=now,
        )
        if not self.running:
            gen._finish(self._early_result(seq, "inference engine is not running"))
            return gen
        try:
            self._inbox.put_nowait(seq)
        except queue.Full:
            gen._finish(self._early_result(seq, "inference queue is full; try again later"))
            return gen
        if self._stopping:  # stop() began after the check above: the thread may have drained
            self._reject_late_submits()  # its inbox for the last time, so answer it here
        self._wake.set()
        return gen

    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        """How many tokens the model's own tokenizer makes of `text` (off the event loop)."""
        return await asyncio.to_thread(self._count_tokens, text)

    def _count_tokens(self, text: str) -> int:
        with self._vocab_lock:
            if self._vocab_model is None:
                return len(text.encode("utf-8")) // 3 + 1  # no model: a safe overestimate
            return len(self._vocab_model.tokenize(text, add_special=False, parse_special=False))

    @staticmethod
    def _early_result(seq: Seq, error: str) -> Result:
        return Result(text="", finish_reason="error", usage=Usage(), agent=seq.agent, error=error)

    # --- the meter -----------------------------------------------------------------------

    def snapshot(self) -> MeterSnapshot:
        """Slot meter data; cheap and safe to call from any thread several times a second."""
        snap = self._snap  # one reference read: a consistent picture
        gpu = self._gpu_cache[1]  # refreshed by the engine thread; never NVML here
        if snap.gpu_offload:
            device = gpu.name if gpu is not None else "GPU"
        else:
            device = "CPU"
        return MeterSnapshot(
            ts=snap.ts,
            state=snap.state,
            device=device,
            model=snap.model,
            slots=snap.slots,
            waiting=snap.waiting,
            kv_used=snap.kv_used,
            kv_total=snap.kv_total,
            tokens_per_s=snap.tokens_per_s,
            gpu=gpu,
            speed=snap.speed,
        )

    def _refresh_gpu(self) -> None:
        """Engine thread only: read NVML if the cached reading is a second old."""
        now = time.monotonic()
        if now - self._gpu_cache[0] < _GPU_CACHE_S:
            return
        try:
            info = read_gpu(0)
        except Exception:  # read_gpu does not raise; the scheduler loop must never see it
            info = None
        self._gpu_cache = (now, info)  # one reference swap

    # --- the engine thread ---------------------------------------------------------------

    def _run(self) -> None:
        # NVML's first call (library load, init) can take a while: pay it here, off the loop.
        self._refresh_gpu()
        try:
            self.config = self._fit_context()
            sched = Scheduler(
                self.config,
                self.model_path,
                n_slots=self.n_slots,
                inbox=self._inbox,
                wake=self._wake,
                stopping=lambda: self._stopping,
                publish=self._publish,
                progress=self._progress,
            )
        except BaseException as err:  # reported to start(); the thread ends here
            self._load_error = err
            self._snap = msgspec.structs.replace(self._snap, state="failed")
            self._ready.set()
            return
        self.load_time_s = sched.load_time_s
        self.chat_template_source = sched.template.source
        self._vocab_model = sched.model
        self._ready.set()
        crashed = True
        try:
            sched.loop()
            crashed = False
        except BaseException:  # the loop's own error handling failed: end, but answer everyone
            log.exception("inference engine thread failed")
        finally:
            self._stopping = True  # nothing new is accepted; `running` is False from here
            if crashed:
                self._snap = msgspec.structs.replace(self._snap, state="failed")
            try:
                why = "inference engine stopped unexpectedly" if crashed else "inference engine stopped"
                sched.abandon(why)
            finally:
                with self._vocab_lock:
                    self._vocab_model = None
                with contextlib.suppress(Exception):
                    sched.close()
                self._reject_late_submits()

    def _fit_context(self) -> InferenceConfig:
        """Engine thread, before the weights load: n_ctx within what the model's trained
        context lets the slots use, and its KV cache within memory (an n_ctx the config
        allowed once took 19 GB and hung). ModelError when it cannot fit."""
        cfg = self.config
        shape = read_shape(self.model_path)
        if shape is None:  # no metadata to go by: the load itself reports a bad file
            return cfg
        gpu = self._gpu_cache[1]
        if gpu is not None and offloads_to_gpu(cfg.n_gpu_layers) and (
                cfg.n_gpu_layers < 0 or cfg.n_gpu_layers >= shape.n_layer):
            # Every layer, and so the whole KV cache, on the GPU.
            room, where = gpu.vram_total_bytes - gpu.vram_used_bytes, f"the GPU ({gpu.name})"
        else:
            room, where = psutil.virtual_memory().available, "the machine"
        n_ctx = fit_n_ctx(cfg.n_ctx, self.n_slots, shape, room, where)
        return cfg if n_ctx == cfg.n_ctx else msgspec.structs.replace(cfg, n_ctx=n_ctx)

    def _publish(self, snap: EngineSnapshot) -> None:
        """Called by the scheduler after every step and idle tick (at least once a second)."""
        self._snap = snap  # one reference swap; readers never see half a snapshot
        self._refresh_gpu()

    def _reject_late_submits(self) -> None:
        """Requests that slipped in while stopping: answer them so no caller waits forever."""
        while True:
            try:
                seq = self._inbox.get_nowait()
            except queue.Empty:
                return
            result = self._early_result(seq, "inference engine stopped")
            with contextlib.suppress(RuntimeError):
                seq.gen._loop.call_soon_threadsafe(seq.gen._finish, result)


__all__ = ["Engine", "Generation"]
