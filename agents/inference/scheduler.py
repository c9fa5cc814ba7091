"""The engine thread's scheduler: slots, admission, batching, sampling. llama.cpp lives here.

Everything in this module runs on the one engine thread; nothing else calls into llama.cpp.

Each step decodes one token for every generating sequence plus prompt chunks of admitted
sequences: while others generate, only a budget of prompt tokens per step, shared fairly
(planning.py), so a long prompt never stalls the rest. Waiting requests are admitted by
priority, then age; a request that finds every slot busy pauses the lowest-priority running
sequence below its own priority (its KV copied to host memory and restored when it
resumes, so nothing is re-evaluated). Slots keep their KV cache after a request, so the
next request re-evaluates only from the first token that differs (a prefix cache per
slot, capped); an agent prefers the slot it used last. With one unified KV pool, when the
cells run short, idle caches go first, then prompt chunks shrink, then the lowest-priority
sequence is paused, so a full cache never crashes the engine. No sequence runs past its
slot's cells or the model's trained context.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.config import InferenceConfig, SamplingConfig
from agents.errors import ModelError
from agents.inference.chat import ChatTemplate
from agents.inference.generation import Generation, deliver
from agents.inference.meter import EngineSnapshot, SlotInfo, SpeedGauge
from agents.inference.model import LlamaModel, ProgressFn
from agents.inference.planning import PrefillBudget, share_prefill
from agents.inference.sampling import Candidates, SeqSampler
from agents.inference.text import TextStream
from agents.inference.types import FinishReason, Result, Usage

log = logging.getLogger("agents.inference")

_IDLE_TICK_S = 1.0  # an idle engine thread still wakes this often (snapshot, deadlines)
_RATE_WINDOW_S = 2.0  # the meter's aggregate tokens/s is measured over this window
# Share of a prompt another agent's cached prefix must cover before its slot is taken
# over (llama.cpp's server uses the same default similarity).
SIMILARITY = 0.10
# Paused sequences' KV copies in host memory stay under this; past it, a paused sequence
# drops its KV and re-evaluates its tokens when it resumes.
SAVED_KV_CAP_BYTES = 1 << 30
# The load-time warm-up that first measures the model's speed: prompt tokens evaluated in
# one batch, then tokens generated one step at a time (counted in the load time).
WARM_UP_PROMPT = 64
WARM_UP_GEN = 8
_WARM_UP_TEXT = "The quick brown fox jumps over the lazy dog while the five agents watch. " * 16


@dataclass(eq=False)
class Seq:
    """A request inside the engine. Created by submit(); engine thread only afterwards."""

    gen: Generation
    messages: list[dict[str, str]]
    agent: str
    priority: int
    deadline: float  # time.monotonic()
    max_tokens: int
    stops: tuple[str, ...]
    ignore_eos: bool
    sampling: SamplingConfig
    gbnf: str | None
    order: int  # submit order: the tie-break after priority (older first)
    submitted: float
    # engine-thread state
    tokens: list[int] = field(default_factory=list)  # prompt + generated
    n_prompt: int = 0
    n_past: int = 0  # how many of `tokens` are in the slot's KV cache
    n_gen: int = 0
    slot: Slot | None = None
    sampler: SeqSampler | None = None
    stream: TextStream | None = None
    cached_prompt: int | None = None  # set on first admission
    paused: bool = False  # preempted for KV room at least once: resume only with room to finish
    saved: ctypes.Array[ctypes.c_uint8] | None = None  # its KV in host memory while suspended
    saved_n_past: int = 0
    admitted_at: float | None = None
    admission: int | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.n_past


@dataclass(eq=False)
class Slot:
    index: int  # also the llama seq_id
    cached: list[int] = field(default_factory=list)  # tokens in KV while idle
    seq: Seq | None = None
    last_agent: str | None = None
    last_used: float = 0.0

    def kv_cells(self) -> int:
        return self.seq.n_past if self.seq is not None else len(self.cached)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    """Everything that touches llama.cpp. Created, run and closed on the engine thread.

    It shares only these with the Engine: the bounded inbox and wake event (requests in),
    a stop flag, and `publish` (the meter snapshot out).
    """

    def __init__(
        self,
        config: InferenceConfig,
        model_path: Path,
        *,
        n_slots: int,
        inbox: queue.Queue[Seq],
        wake: threading.Event,
        stopping: Callable[[], bool],
        publish: Callable[[EngineSnapshot], None],
        progress: ProgressFn | None = None,
    ) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.config = config
        self.model_path = model_path
        self.inbox = inbox
        self.wake = wake
        self.stopping = stopping
        self.publish = publish
        cfg = config
        t0 = time.perf_counter()
        self.model = LlamaModel(model_path, n_gpu_layers=cfg.n_gpu_layers, progress=progress)
        try:
            self.template = ChatTemplate(
                self.model.chat_template(),
                bos_token=self.model.token_text(self.model.bos),
                eos_token=self.model.token_text(self.model.eos),
            )
            threads = cfg.threads or os.cpu_count() or 1
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = cfg.n_ctx
            params.n_batch = cfg.n_batch
            params.n_ubatch = cfg.n_batch
            params.n_seq_max = n_slots
            params.n_threads = threads
            params.n_threads_batch = threads
            # Unified: one pool of cells shared by all slots, so a busy slot may use what idle
            # ones do not, but every step attends over the pool. Split: each slot its own
            # n_ctx / slots cells, which idle caches elsewhere cannot slow (config.py).
            params.kv_unified = cfg.kv_unified
            params.no_perf = True
            self.ctx = llama_cpp.llama_init_from_model(self.model.ptr, params)
            if not self.ctx:
                raise ModelError(
                    f"llama.cpp could not create a context for {model_path} "
                    f"(n_ctx={cfg.n_ctx}, slots={n_slots}) — lower inference.n_ctx"
                )
        except BaseException:
            self.model.close()
            raise
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(self.ctx))
        self.unified = cfg.kv_unified
        self.seq_cells = int(llama_cpp.llama_n_ctx_seq(self.ctx))  # one slot's cells at most
        # One sequence never runs past its cells or the context the model was trained on.
        train = self.model.n_ctx_train
        self.max_seq_tokens = min(self.seq_cells, train) if train > 0 else self.seq_cells
        self.idle_cap = cfg.idle_cache_tokens or max(1, self.n_ctx // n_slots)
        self.budget = PrefillBudget(self.n_batch, fixed=cfg.prefill_budget)
        self.saved_bytes = 0
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.candidates = Candidates(llama_cpp, self.model.n_vocab)
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload()) and cfg.n_gpu_layers != 0
        self.gauge = SpeedGauge()
        self._warm_up()
        self.load_time_s = time.perf_counter() - t0
        self.slots = [Slot(i) for i in range(n_slots)]
        self.waiting: list[Seq] = []
        self.admissions = itertools.count(1)
        self.rate: deque[tuple[float, int]] = deque()
        self.outbox: dict[asyncio.AbstractEventLoop, list[tuple[Generation, str, Result | None]]]
        self.outbox = {}
        self._publish_snapshot("ready")

    # -- the speed, measured once at load --

    def _warm_up(self) -> None:
        """Time a short prefill and a few generation steps on slot 0, then forget them, so
        the first deadlines already fit the model. A failure leaves the speed unmeasured."""
        n = min(WARM_UP_PROMPT, self.n_batch, self.max_seq_tokens - WARM_UP_GEN - 2)
        tokens = self.model.tokenize(_WARM_UP_TEXT, add_special=False, parse_special=False)[:n]
        if n < 2 or len(tokens) < n:
            return
        try:
            # Once untimed: the first decodes page the weights in and build each batch
            # shape's graph, seconds on a cold CPU that no later step pays.
            self._decode_alone(tokens, 0)
            self._decode_alone(tokens[:1], n)
            self.lib.llama_memory_seq_rm(self.mem, 0, -1, -1)
            t0 = time.perf_counter()
            self._decode_alone(tokens, 0)
            prompt_s = time.perf_counter() - t0
            steps = []
            for i in range(WARM_UP_GEN):  # any token costs the same: no sampling needed
                t0 = time.perf_counter()
                self._decode_alone(tokens[i : i + 1], n + i)
                steps.append(time.perf_counter() - t0)
        except RuntimeError as err:
            log.warning("could not measure the model's speed at load: %s", err)
            return
        finally:
            self.lib.llama_memory_seq_rm(self.mem, 0, -1, -1)
        step_s = sorted(steps)[len(steps) // 2]  # the median: one step stalled by the OS says little
        self.gauge.warmed(n / max(prompt_s, 1e-6), 1.0 / max(step_s, 1e-6))
        log.info("measured at load: %.0f prompt tok/s, %.1f generated tok/s",
                 self.gauge.speed.prompt_tps, self.gauge.speed.gen_tps)  # type: ignore[union-attr]

    def _decode_alone(self, tokens: list[int], start: int) -> None:
        """Decode `tokens` on sequence 0 from position `start`, logits for the last one."""
        b = self.batch
        for j, token in enumerate(tokens):
            b.token[j] = token
            b.pos[j] = start + j
            b.n_seq_id[j] = 1
            b.seq_id[j][0] = 0
            b.logits[j] = 1 if j == len(tokens) - 1 else 0
        b.n_tokens = len(tokens)
        ret = self.lib.llama_decode(self.ctx, b)
        if ret != 0:
            raise RuntimeError(f"llama_decode returned {ret}")

    # -- main loop --

    def loop(self) -> None:
        while not self.stopping():
            try:
                self._intake()
                self._expire()
                self._admit()
                active = [s.seq for s in self.slots if s.seq is not None]
                if active:
                    self._step(active)
                # Snapshot first: a caller woken by a result then sees its slot freed.
                self._publish_snapshot("ready")
                self._flush()
                self._idle_wait()
            except Exception as err:  # never let the thread die: fail what was running
                log.exception("inference step failed")
                self._fail_everything(f"inference engine error: {err}")
                self._publish_snapshot("ready")
                self._flush()
                time.sleep(0.05)  # a bug that repeats must not spin a core
        self._shutdown()

    def _idle_wait(self) -> None:
        """Sleep until a submit, a cancel or stop, when no slot is busy."""
        if self.stopping() or not self.inbox.empty():
            return
        if any(s.seq is not None for s in self.slots):
            return
        timeout = _IDLE_TICK_S
        if self.waiting:  # cannot happen with every slot free, but never sleep past a deadline
            soonest = min(s.deadline for s in self.waiting) - time.monotonic()
            timeout = min(timeout, max(0.0, soonest))
        self.wake.wait(timeout)
        self.wake.clear()

    # -- requests in --

    def _intake(self) -> None:
        inbox = self.inbox
        while True:
            try:
                seq = inbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._prepare(seq)
            except Exception as err:
                self._finish(seq, "error", error=str(err) or type(err).__name__)
                continue
            self.waiting.append(seq)

    def _prepare(self, seq: Seq) -> None:
        model = self.model
        prompt = self.template.render(seq.messages)
        # The template writes special tokens (bos, <|im_start|>) itself: parse them, add none.
        tokens = model.tokenize(prompt, add_special=False, parse_special=True)
        if model.add_bos and model.bos >= 0 and (not tokens or tokens[0] != model.bos):
            tokens.insert(0, model.bos)
        if not tokens:
            raise ValueError("the prompt is empty")
        if len(tokens) >= self.max_seq_tokens:
            if self.max_seq_tokens < self.seq_cells:
                limit = f"the model was trained on {self.max_seq_tokens} tokens of context"
            else:
                limit = f"a slot holds {self.seq_cells} (raise inference.n_ctx)"
            raise ValueError(f"the prompt is {len(tokens)} tokens; {limit} — shorten the prompt")
        seq.tokens = tokens
        seq.n_prompt = len(tokens)
        seq.stream = TextStream(seq.stops)
        seq.sampler = self._make_sampler(seq)

    def _make_sampler(self, seq: Seq) -> SeqSampler:
        return SeqSampler(
            self.lib,
            self.model,
            self.candidates,
            seq.sampling,
            seed=self.config.seed + seq.order,
            gbnf=seq.gbnf,
            ignore_eos=seq.ignore_eos,
        )

    # -- deadlines and cancellation --

    def _expire(self) -> None:
        now = time.monotonic()
        for seq in list(self.waiting):
            reason = self._stop_reason(seq, now)
            if reason is not None:
                self.waiting.remove(seq)
                self._finish(seq, reason, error=self._timeout_error(seq) if reason == "timeout" else None)
        for slot in self.slots:
            seq = slot.seq
            if seq is not None:
                reason = self._stop_reason(seq, now)
                if reason is not None:
                    self._finish(seq, reason, error=self._timeout_error(seq) if reason == "timeout" else None)

    @staticmethod
    def _stop_reason(seq: Seq, now: float) -> FinishReason | None:
        if seq.gen.cancel_requested:
            return "cancelled"
        if now >= seq.deadline:
            return "timeout"
        return None

    @staticmethod
    def _timeout_error(seq: Seq) -> str:
        """How far a timed-out request got; the caller knows which limit it was."""
        if seq.admitted_at is None:
            return "still waiting for a slot"
        if seq.n_gen == 0:
            return f"still evaluating the prompt ({seq.n_past:,} of {seq.n_prompt:,} tokens)"
        return f"{seq.n_gen:,} of at most {seq.max_tokens:,} new tokens generated"

    # -- admission: priority, then age --

    def _admit(self) -> None:
        if not self.waiting:
            return
        self.waiting.sort(key=lambda s: (-s.priority, s.order))
        for seq in list(self.waiting):
            free = [s for s in self.slots if s.seq is None]
            if not free:
                # Priority means something: pause the lowest-priority running sequence
                # below this one's (its KV kept in host memory) rather than wait for it.
                victim = self._priority_victim(seq)
                if victim is None:
                    return  # lower priorities wait too
                free = [self._suspend(victim, "a higher priority request")]
            slot = self._pick_slot(seq, free)
            keep = min(_common_prefix(slot.cached, seq.tokens), len(seq.tokens) - 1)
            # Its tokens plus one generated token must fit; a sequence paused for KV room
            # comes back only with room to finish, or it would thrash.
            need = len(seq.tokens) + 1
            if seq.paused:
                need = min(self.max_seq_tokens, len(seq.tokens) + seq.max_tokens - seq.n_gen)

            def fits(slot: Slot = slot, need: int = need) -> bool:
                return self._fits(slot, need)

            if not fits():
                self._evict_idle(fits, protect=slot)
            if not fits() and any(s.seq is not None for s in self.slots):
                return  # wait for running sequences to end; lower priorities wait too
            self.waiting.remove(seq)
            self._place(seq, slot, keep)

    def _priority_victim(self, seq: Seq) -> Seq | None:
        """The running sequence to pause for `seq`, if pausing it would let `seq` in."""
        running = [s.seq for s in self.slots if s.seq is not None and s.seq.priority < seq.priority]
        if not running:
            return None
        victim = min(running, key=lambda s: (s.priority, -s.order))
        room = self.seq_cells
        if self.unified:  # the pool less what the others running hold (idle caches can go)
            room = self.n_ctx - sum(s.seq.n_past for s in self.slots if s.seq not in (None, victim))
        return victim if len(seq.tokens) + 1 <= room else None

    def _fits(self, slot: Slot, need: int) -> bool:
        if self.unified:  # cells other slots leave free
            return self._kv_free(exclude=slot) >= need
        return need <= self.seq_cells  # the slot's own stream

    def _pick_slot(self, seq: Seq, free: list[Slot]) -> Slot:
        """The agent's own slot; else one whose cache holds a real part of this prompt;
        else an empty one; else the least recently used one. Taking another agent's slot for
        a few shared tokens (the chat template's header) would throw its whole cache away
        while empty slots wait: the audit saw 1.6k cached tokens lost per turn."""
        if seq.agent:
            mine = [s for s in free if s.last_agent == seq.agent]
            if mine:
                return max(mine, key=lambda s: _common_prefix(s.cached, seq.tokens))
        best = max(free, key=lambda s: (_common_prefix(s.cached, seq.tokens), -s.last_used))
        shared = _common_prefix(best.cached, seq.tokens)
        if shared and shared >= SIMILARITY * len(seq.tokens):
            return best
        empty = [s for s in free if not s.cached]
        if empty:
            return empty[0]
        # No empty slot: the least recently used one, never the busiest cache for a few
        # shared tokens (that would hand every newcomer the slot an agent just used).
        return min(free, key=lambda s: s.last_used)

    def _place(self, seq: Seq, slot: Slot, keep: int) -> None:
        lib = self.lib
        if seq.saved is not None:
            keep = self._restore(seq, slot)
        elif keep < len(slot.cached):
            # Drop the stale tail; some memories (recurrent, SWA) cannot cut mid-sequence.
            if not lib.llama_memory_seq_rm(self.mem, slot.index, keep, -1):
                lib.llama_memory_seq_rm(self.mem, slot.index, -1, -1)
                keep = 0
        slot.cached = []
        slot.seq = seq
        slot.last_agent = seq.agent or slot.last_agent
        seq.slot = slot
        seq.n_past = keep
        if seq.cached_prompt is None:  # first admission (not a resume after preemption)
            seq.cached_prompt = min(keep, seq.n_prompt)
            seq.admitted_at = time.monotonic()
            seq.admission = next(self.admissions)

    def _kv_used(self) -> int:
        return sum(s.kv_cells() for s in self.slots)

    def _kv_free(self, exclude: Slot | None = None) -> int:
        used = sum(s.kv_cells() for s in self.slots if s is not exclude)
        return self.n_ctx - used

    def _evict_idle(self, enough: Callable[[], bool], protect: Slot | None = None) -> bool:
        """Forget idle slots' caches, least recently used first, until `enough()`."""
        freed = False
        while not enough() and self._evict_lru_idle(protect):
            freed = True
        return freed

    def _evict_lru_idle(self, protect: Slot | None = None) -> bool:
        """Forget the least recently used idle slot's cache; False if there is none."""
        idle = [s for s in self.slots if s.seq is None and s.cached and s is not protect]
        if not idle:
            return False
        slot = min(idle, key=lambda s: s.last_used)
        self.lib.llama_memory_seq_rm(self.mem, slot.index, -1, -1)
        slot.cached = []
        return True

    def _preempt(self, active: list[Seq]) -> Seq | None:
        """KV cells ran out: pause the lowest-priority (then youngest) sequence until there
        is room for it to finish. Its sampler state is kept."""
        if len(active) < 2:
            return None
        victim = min(active, key=lambda s: (s.priority, -s.order))
        victim.paused = True
        self._suspend(victim, "KV cache full")
        active.remove(victim)
        return victim

    def _suspend(self, seq: Seq, why: str) -> Slot:
        """Take a running sequence out of its slot and queue it again; its KV goes to host
        memory (within SAVED_KV_CAP_BYTES) so that resuming costs a copy, not a prefill."""
        lib = self.lib
        slot = seq.slot
        assert slot is not None
        size = int(lib.llama_state_seq_get_size(self.ctx, slot.index))
        if seq.n_past and self.saved_bytes + size <= SAVED_KV_CAP_BYTES:
            buf = (ctypes.c_uint8 * size)()
            if int(lib.llama_state_seq_get_data(self.ctx, buf, size, slot.index)) == size:
                seq.saved, seq.saved_n_past = buf, seq.n_past
                self.saved_bytes += size
        lib.llama_memory_seq_rm(self.mem, slot.index, -1, -1)
        slot.seq = None
        slot.cached = []
        slot.last_used = time.monotonic()
        seq.slot = None
        seq.n_past = 0
        self.waiting.append(seq)
        kept = "kept in memory" if seq.saved is not None else "dropped"
        log.info("%s: paused %s (priority %d, KV %s)", why, seq.agent or "request", seq.priority, kept)
        return slot

    def _restore(self, seq: Seq, slot: Slot) -> int:
        """Put a suspended sequence's KV back into `slot`; how many tokens it holds (0 when
        llama.cpp could not place it: the tokens are then evaluated again)."""
        lib, buf = self.lib, seq.saved
        assert buf is not None
        lib.llama_memory_seq_rm(self.mem, slot.index, -1, -1)
        slot.cached = []
        ok = int(lib.llama_state_seq_set_data(self.ctx, buf, len(buf), slot.index)) > 0
        self._drop_saved(seq)
        if not ok:
            lib.llama_memory_seq_rm(self.mem, slot.index, -1, -1)
            log.info("could not restore %s's KV; evaluating its tokens again", seq.agent or "request")
            return 0
        return seq.saved_n_past

    def _drop_saved(self, seq: Seq) -> None:
        if seq.saved is not None:
            self.saved_bytes -= len(seq.saved)
            seq.saved = None

    # -- one decode step --

    def _plan(self, active: list[Seq], chunk_limit: int) -> list[tuple[Seq, int, bool]]:
        """(sequence, tokens to feed, wants logits) for one batch: a token for every
        generating sequence, then prompt tokens within the step's budget, shared fairly."""
        room = self.n_batch
        plan: list[tuple[Seq, int, bool]] = []
        generating = [s for s in active if s.pending == 1]
        prefill = sorted((s for s in active if s.pending > 1), key=lambda s: s.order)
        for seq in generating[:room]:
            plan.append((seq, 1, True))
        room -= len(plan)
        budget = min(room, self.budget.tokens(generating=bool(plan)))
        wants = [(s.priority, min(s.pending, chunk_limit)) for s in prefill]
        for seq, n in zip(prefill, share_prefill(budget, wants), strict=True):
            if n:
                plan.append((seq, n, n == seq.pending))
        return plan

    def _step(self, active: list[Seq]) -> None:
        lib = self.lib
        chunk_limit = self.n_batch
        for _attempt in range(64):
            if not active:
                return
            plan = self._plan(active, chunk_limit)
            n_new = sum(n for _, n, _ in plan)
            if self.unified and n_new > self._kv_free():
                self._evict_idle(lambda n_new=n_new: n_new <= self._kv_free())
            if self.unified and n_new > self._kv_free():
                if any(n > 1 for _, n, _ in plan) and chunk_limit > 1:
                    chunk_limit = max(1, chunk_limit // 2)
                    continue
                if self._preempt(active) is None:
                    self._finish(active[0], "length")  # alone and out of context
                    active.clear()
                continue
            self._fill(plan)
            rows = sum(1 for seq, _, _ in plan if seq.pending == 1)  # one token each
            t0 = time.perf_counter()
            ret = lib.llama_decode(self.ctx, self.batch)
            if ret == 0:
                self.budget.observe(time.perf_counter() - t0, rows, n_new - rows)
                self._after_decode(plan)
                # Sampling included: a sequence waits for it as much as for the decode.
                self.gauge.observe(time.perf_counter() - t0, prompt_tokens=n_new - rows,
                                   prefilling=len(plan) - rows, generating=rows)
                return
            if ret == 1:  # no KV slot for the batch (fragmentation): make room and retry,
                # one idle cache at a time, so one shortage does not cost every agent its cache
                if self._evict_lru_idle():
                    continue
                if chunk_limit > 1 and any(n > 1 for _, n, _ in plan):
                    chunk_limit = max(1, chunk_limit // 2)
                    continue
                if self._preempt(active) is not None:
                    continue
                self._finish(active[0], "length")
                return
            # Aborted or fatal: the memory may hold part of the batch. Fail these sequences
            # and forget their caches so the next step starts clean.
            log.error("llama_decode returned %d", ret)
            for seq, _, _ in plan:
                slot = seq.slot
                self._finish(seq, "error", error=f"llama_decode failed ({ret})")
                if slot is not None:
                    lib.llama_memory_seq_rm(self.mem, slot.index, -1, -1)
                    slot.cached = []
            return
        log.error("could not fit a batch after many retries")

    def _fill(self, plan: list[tuple[Seq, int, bool]]) -> None:
        b = self.batch
        i = 0
        for seq, n, wants_logits in plan:
            seq_id = seq.slot.index  # type: ignore[union-attr]
            start = seq.n_past
            for j in range(n):
                b.token[i] = seq.tokens[start + j]
                b.pos[i] = start + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = 1 if (wants_logits and j == n - 1) else 0
                i += 1
        b.n_tokens = i

    def _after_decode(self, plan: list[tuple[Seq, int, bool]]) -> None:
        model = self.model
        now = time.monotonic()
        produced = 0
        idx = -1
        for seq, n, wants_logits in plan:
            idx += n
            seq.n_past += n
            if not wants_logits:
                continue
            token = seq.sampler.sample(self.ctx, idx)  # type: ignore[union-attr]
            if token in model.eog_tokens:
                self._finish(seq, "stop")
                continue
            seq.tokens.append(token)
            seq.n_gen += 1
            produced += 1
            if seq.first_token_at is None:
                seq.first_token_at = now
            seq.last_token_at = now
            piece = seq.stream.feed(model.piece(token))  # type: ignore[union-attr]
            if piece:
                self._send(seq.gen, piece)
            if seq.stream.stopped:  # type: ignore[union-attr]
                self._finish(seq, "stop")
            elif seq.n_gen >= seq.max_tokens or len(seq.tokens) >= self.max_seq_tokens:
                self._finish(seq, "length")
        if produced:
            self.rate.append((now, produced))

    # -- results out --

    def _send(self, gen: Generation, piece: str, result: Result | None = None) -> None:
        self.outbox.setdefault(gen._loop, []).append((gen, piece, result))

    def _finish(self, seq: Seq, reason: FinishReason, error: str | None = None) -> None:
        now = time.monotonic()
        slot = seq.slot
        if slot is not None:
            slot.cached = seq.tokens[: seq.n_past]  # what the KV holds: the next prefix cache
            if len(slot.cached) > self.idle_cap:  # keep the prefix (system prompt, task)
                self.lib.llama_memory_seq_rm(self.mem, slot.index, self.idle_cap, -1)
                slot.cached = slot.cached[: self.idle_cap]
            slot.seq = None
            slot.last_used = now
            seq.slot = None
        self._drop_saved(seq)
        if seq.sampler is not None:
            seq.sampler.free()
            seq.sampler = None
        tail = seq.stream.finish() if seq.stream is not None else ""
        text = seq.stream.text if seq.stream is not None else ""
        usage = Usage(
            prompt_tokens=seq.n_prompt,
            cached_prompt_tokens=seq.cached_prompt or 0,
            completion_tokens=seq.n_gen,
            queue_wait_s=(seq.admitted_at or now) - seq.submitted,
            decode_s=now - seq.admitted_at if seq.admitted_at is not None else 0.0,
            ttft_s=seq.first_token_at - seq.submitted if seq.first_token_at else None,
        )
        result = Result(
            text=text,
            finish_reason=reason,
            usage=usage,
            agent=seq.agent,
            slot=slot.index if slot is not None else None,
            admission=seq.admission,
            error=error,
        )
        self._send(seq.gen, tail, result)

    def _flush(self) -> None:
        """Hand each loop this step's pieces and results in one callback."""
        if not self.outbox:
            return
        outbox, self.outbox = self.outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                for gen, _, _ in items:
                    gen.cancel_requested = True

    def _fail_everything(self, error: str) -> None:
        for slot in self.slots:
            if slot.seq is not None:
                self._finish(slot.seq, "error", error=error)
            slot.cached = []
        for seq in self.waiting:
            self._finish(seq, "error", error=error)
        self.waiting.clear()
        self.lib.llama_memory_clear(self.mem, True)

    def _shutdown(self) -> None:
        self._intake()
        for slot in self.slots:
            if slot.seq is not None:
                self._finish(slot.seq, "cancelled", error="inference engine stopped")
        for seq in self.waiting:
            self._finish(seq, "cancelled", error="inference engine stopped")
        self.waiting.clear()
        self._publish_snapshot("stopped")
        self._flush()

    def abandon(self, error: str) -> None:
        """After the loop ended, however it ended: answer every request still held (in a
        slot, waiting, or finished but not yet handed over) so no caller waits forever.
        Empty after a clean _shutdown(); never raises."""
        held = [s.seq for s in self.slots if s.seq is not None] + self.waiting
        self.waiting = []
        for seq in held:
            try:
                self._finish(seq, "error", error=error)
            except Exception:  # keep going with a bare result: an answer matters most
                bare = Result(text="", finish_reason="error", usage=Usage(), agent=seq.agent, error=error)
                self._send(seq.gen, "", bare)
        try:
            self._flush()
        except Exception:
            log.exception("could not hand over the last results")

    def close(self) -> None:
        lib = self.lib
        lib.llama_batch_free(self.batch)
        lib.llama_free(self.ctx)
        self.model.close()

    # -- the meter --

    def _publish_snapshot(self, state: str) -> None:
        now = time.monotonic()
        while self.rate and now - self.rate[0][0] > _RATE_WINDOW_S:
            self.rate.popleft()
        total = sum(n for _, n in self.rate)
        slots = []
        for s in self.slots:
            seq = s.seq
            if seq is None:
                slots.append(
                    SlotInfo(
                        index=s.index,
                        agent=s.last_agent,
                        state="idle",
                        tokens_generated=0,
                        tokens_per_s=0.0,
                        cached_tokens=len(s.cached),
                    )
                )
                continue
            rate = 0.0
            if seq.first_token_at and seq.last_token_at and seq.n_gen > 1:
                span = seq.last_token_at - seq.first_token_at
                rate = (seq.n_gen - 1) / span if span > 0 else 0.0
            slots.append(
                SlotInfo(
                    index=s.index,
                    agent=seq.agent or None,
                    state="prefill" if seq.pending > 1 or seq.n_gen == 0 else "generating",
                    tokens_generated=seq.n_gen,
                    tokens_per_s=round(rate, 2),
                    cached_tokens=seq.n_past,
                )
            )
        waiting: dict[int, int] = {}
        for seq in self.waiting:
            waiting[seq.priority] = waiting.get(seq.priority, 0) + 1
        self.publish(
            EngineSnapshot(
                ts=time.time(),
                state=state,  # type: ignore[arg-type]
                model=self.model_path.name,
                slots=slots,
                waiting=waiting,
                kv_used=self._kv_used(),
                kv_total=self.n_ctx,
                tokens_per_s=round(total / _RATE_WINDOW_S, 2),
                gpu_offload=self.gpu_offload,
                speed=self.gauge.speed,
            )
        )
