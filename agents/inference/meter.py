"""The slot meter: an immutable snapshot of the engine, cheap to read several times a second.

The engine thread builds a new `EngineSnapshot` after every step and swaps one reference,
so readers on any thread get a consistent picture without a lock. The GPU part (NVML) is
read by the engine thread at most once a second and added by `Engine.snapshot()` from that
cache, so taking a snapshot never calls into the driver.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from agents.inference.gpu import GpuInfo

SlotState = Literal["idle", "prefill", "generating"]


class SlotInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    agent: str | None  # the agent it serves now, or last served (idle slots keep its cache)
    state: SlotState
    tokens_generated: int  # by the current request (0 when idle)
    tokens_per_s: float  # generation rate of the current request
    cached_tokens: int  # KV cells this slot holds


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


class MeterSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the TUI meter and `agentdeck status --json` (under `slots`) show."""

    ts: float
    state: Literal["starting", "ready", "stopped", "failed"]
    device: str  # GPU name, or "CPU"
    model: str
    slots: list[SlotInfo]
    waiting: dict[int, int]
    kv_used: int
    kv_total: int
    tokens_per_s: float
    gpu: GpuInfo | None  # None: no NVIDIA GPU visible (a normal state)
