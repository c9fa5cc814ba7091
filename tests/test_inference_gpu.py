"""NVML readings: no library, no driver or no GPU is a normal state (None), never an error."""

from __future__ import annotations

import sys
import types

import pytest

from agents.inference import gpu


@pytest.fixture(autouse=True)
def fresh_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as if NVML had never been tried in this process."""
    monkeypatch.setattr(gpu, "_state", {"tried": False, "nvml": None})


def test_without_the_nvml_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert gpu.read_gpu() is None
    assert gpu.read_gpus() == [] and gpu.gpu_count() == 0


def test_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu.read_gpu() is None and gpu.read_gpus() == []


def test_with_a_gpu_that_hides_utilisation(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    mem = types.SimpleNamespace(used=3 * 2**30, total=24 * 2**30)

    def no_util(_handle: object) -> None:
        raise RuntimeError("Not Supported")

    fake.__dict__.update(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA GeForce RTX 3090",
        nvmlDeviceGetMemoryInfo=lambda h: mem,
        nvmlDeviceGetUtilizationRates=no_util,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = gpu.read_gpu()
    assert info is not None
    assert info.name == "NVIDIA GeForce RTX 3090"
    assert (info.vram_used_bytes, info.vram_total_bytes) == (3 * 2**30, 24 * 2**30)
    assert info.utilization_pct is None
    assert [g.name for g in gpu.read_gpus()] == ["NVIDIA GeForce RTX 3090"]


def test_this_machine_never_raises() -> None:
    info = gpu.read_gpu()
    assert info is None or (info.vram_total_bytes > 0 and info.name)
