"""Local inference: one llama.cpp model shared by all agents through continuous batching.

Public API (import from here):
- Backend: the one protocol every inference backend meets (agents.inference.backend)
- build_backend: the backend the config asks for (agents.inference.factory); front ends
  and benches build through it, never `Engine(...)` themselves
- Engine, Generation: the engine thread and a submitted request (agents.inference.engine)
- ChatMessage, Result, Usage, FinishReason: request/result data (agents.inference.types)
- MeterSnapshot, SlotInfo: the slot meter (agents.inference.meter)
- GpuInfo, read_gpu, read_gpus: NVML readings, None without a GPU (agents.inference.gpu)
- resolve_model_path, embedded_model_path, check_gguf: which GGUF (agents.inference.model)

Importing this package does not import llama_cpp; that happens when an engine starts.
"""

from agents.inference.backend import Backend
from agents.inference.engine import Engine, Generation
from agents.inference.factory import build_backend
from agents.inference.gpu import GpuInfo, read_gpu, read_gpus
from agents.inference.meter import MeterSnapshot, SlotInfo
from agents.inference.model import check_gguf, embedded_model_path, resolve_model_path
from agents.inference.types import ChatMessage, FinishReason, Result, Usage

__all__ = [
    "Backend",
    "ChatMessage",
    "Engine",
    "FinishReason",
    "Generation",
    "GpuInfo",
    "MeterSnapshot",
    "Result",
    "SlotInfo",
    "Usage",
    "build_backend",
    "check_gguf",
    "embedded_model_path",
    "read_gpu",
    "read_gpus",
    "resolve_model_path",
]
