"""NVIDIA GPU readings through NVML (`pynvml` from nvidia-ml-py).

No GPU, no driver or no NVML library is a normal state: every function here returns None
(or an empty list) instead of raising.
"""

from __future__ import annotations

import threading
from typing import Any

import msgspec

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "nvml": None}


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    name: str
    vram_used_bytes: int
    vram_total_bytes: int
    utilization_pct: int | None  # GPU busy %, None when the driver does not report it


def _nvml() -> Any | None:
    """The initialised pynvml module, or None. Initialised once per process."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _state["nvml"] = pynvml
            except Exception:  # no library, no driver, no device: all mean "no GPU"
                _state["nvml"] = None
        return _state["nvml"]


def gpu_count() -> int:
    nvml = _nvml()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def read_gpu(index: int = 0) -> GpuInfo | None:
    """Name, VRAM and utilisation of GPU `index`, or None when there is no such GPU."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):  # older bindings return bytes
            name = name.decode("utf-8", "replace")
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            util: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # some GPUs (MIG slices, vGPU) do not report utilisation
            util = None
        return GpuInfo(
            index=index,
            name=str(name),
            vram_used_bytes=int(mem.used),
            vram_total_bytes=int(mem.total),
            utilization_pct=util,
        )
    except Exception:
        return None


def read_gpus() -> list[GpuInfo]:
    """All GPUs NVML sees (empty without one)."""
    found = (read_gpu(i) for i in range(gpu_count()))
    return [g for g in found if g is not None]
