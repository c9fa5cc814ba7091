"""The slot meter: an immutable snapshot of the engine, cheap to read several times a second.

The engine thread builds a new `EngineSnapshot` after every step and swaps one reference,
so readers on any thread get a consistent picture without a lock. The GPU part (NVML) is
read by the engine thread at most once a second and added by `Engine.snapshot()` from that
cache, so taking a snapshot never calls into the driver.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from agents.inference.gpu import GpuInfo

SlotState = Literal["idle", "prefill", "generating"]
# "breaker_open": a remote server failed often enough that its circuit breaker holds
# requests back; told apart from "failed" (an engine that died, a backend that never started).
MeterState = Literal["starting", "ready", "stopped", "failed", "breaker_open"]


class Speed(msgspec.Struct, frozen=True, kw_only=True):
    """The model's measured speed on this machine, per sequence: what one request gets.

    Measured at load (a short warm-up) and kept up to date from real steps, as a moving
    average per kind over the steps that did that work; under batching a sequence gets one
    token per step, so generation speed is 1 / step seconds however many share the step.
    """

    prompt_tps: float  # prompt tokens evaluated per second
    gen_tps: float  # new tokens per second
    measured_at: float  # time.time() of the newest sample


class SlotInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    agent: str | None  # the agent it serves now, or last served (idle slots keep its cache)
    state: SlotState
    tokens_generated: int  # by the current request (0 when idle)
    tokens_per_s: float  # generation rate of the current request
    cached_tokens: int  # KV cells this slot holds
    backend: str = ""  # the backend it belongs to, named when several are in use


class EngineSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the engine thread knows; no GPU readings."""

    ts: float  # time.time() of the step that produced it
    state: Literal["starting", "ready", "stopped", "failed"]
    model: str  # file name of the model
    slots: list[SlotInfo]
    waiting: dict[int, int]  # priority -> requests waiting for a slot
    kv_used: int
    kv_total: int
    tokens_per_s: float  # all slots together, over the last couple of seconds
    gpu_offload: bool  # llama.cpp was built with a GPU backend and layers are offloaded
    speed: Speed | None = None  # None until the warm-up has measured it


class BackendMeter(msgspec.Struct, frozen=True, kw_only=True):
    """One backend's line on a meter that shows several."""

    name: str
    kind: str  # "embedded", or the server's flavour ("llama-server", "vllm", ...)
    state: MeterState
    detail: str = ""  # why it is failed or its breaker open (one line), else ""
    model: str = ""
    running: int = 0  # requests running: the server's own count where it reports one
    waiting: int = 0  # requests waiting: ours queued, plus the server's queue where it reports one
    kv_usage: float | None = None  # 0 .. 1; None where unknown
    tokens_per_s: float = 0.0


class MeterSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the TUI meter and `agentdeck status --json` (under `slots`) show."""

    ts: float
    state: MeterState
    device: str  # GPU name, or "CPU"
    model: str
    slots: list[SlotInfo]
    waiting: dict[int, int]
    kv_used: int
    kv_total: int
    tokens_per_s: float
    gpu: GpuInfo | None  # None: no NVIDIA GPU visible (a normal state)
    speed: Speed | None = None  # None: not measured (yet), or a backend without a model
    kind: str = "embedded"  # or the server's flavour, for a remote backend
    detail: str = ""  # why the state is failed or breaker_open (one line), else ""
    # One per backend when several are in use (the routed backend's merge); a single
    # backend's own summary where it knows more than its slots say (a remote server's load).
    backends: list[BackendMeter] = msgspec.field(default_factory=list)


def summarize(name: str, snap: MeterSnapshot) -> BackendMeter:
    """A backend's summary line from its snapshot: its own where it gave one, else
    counted from its slots."""
    if len(snap.backends) == 1:
        return msgspec.structs.replace(snap.backends[0], name=name, state=snap.state,
                                       detail=snap.detail or snap.backends[0].detail)
    return BackendMeter(name=name, kind=snap.kind, state=snap.state, detail=snap.detail, model=snap.model,
                        running=sum(1 for s in snap.slots if s.state != "idle"),
                        waiting=sum(snap.waiting.values()),
                        kv_usage=snap.kv_used / snap.kv_total if snap.kv_total else None,
                        tokens_per_s=snap.tokens_per_s)


class SpeedGauge:
    """Keeps the engine's `Speed`: set by the load-time warm-up, then a moving average per
    kind over real steps. Engine thread only; `speed` is an immutable value to publish."""

    WEIGHT = 0.2  # of the newest step in the moving averages
    MIN_PROMPT_SAMPLE = 32  # prompt tokens a step must carry to say anything about prefill speed

    def __init__(self) -> None:
        self.speed: Speed | None = None

    def warmed(self, prompt_tps: float, gen_tps: float) -> None:
        self.speed = Speed(prompt_tps=prompt_tps, gen_tps=gen_tps, measured_at=time.time())

    def observe(self, seconds: float, *, prompt_tokens: int, prefilling: int, generating: int) -> None:
        """One decode step of `seconds` that fed `prompt_tokens` shared by `prefilling`
        sequences and one token each to `generating` sequences."""
        old = self.speed
        if old is None or seconds <= 0:
            return  # the warm-up did not run: no base to average on
        prompt, gen = old.prompt_tps, old.gen_tps
        if prefilling and prompt_tokens >= self.MIN_PROMPT_SAMPLE:  # a few tokens time the step, not them
            prompt += self.WEIGHT * (prompt_tokens / prefilling / seconds - prompt)
        if generating:
            gen += self.WEIGHT * (1.0 / seconds - gen)
        if (prompt, gen) != (old.prompt_tps, old.gen_tps):
            self.speed = Speed(prompt_tps=prompt, gen_tps=gen, measured_at=time.time())
