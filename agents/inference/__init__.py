"""Local inference: one llama.cpp model shared by all agents through continuous batching.

Public API (import from here):
- Backend: the one protocol every inference backend meets (agents.inference.backend)
- build_backends: every backend the config uses (agents.inference.factory), routed per
  agent by a RoutedBackend (agents.inference.routed) or the plain Engine when only the
  embedded one is used; build_backend: one embedded engine from an [inference] config.
  Front ends and benches build through these, never `Engine(...)` themselves
- agent_snapshot: the meter of the backend that serves an agent (its speed, its deadlines)
- Engine, Generation: the engine thread and a submitted request (agents.inference.engine)
- ChatMessage, Result, Usage, FinishReason: request/result data (agents.inference.types)
- MeterSnapshot, SlotInfo: the slot meter (agents.inference.meter)
- GpuInfo, read_gpu, read_gpus: NVML readings, None without a GPU (agents.inference.gpu)
- resolve_model_path, embedded_model_path, check_gguf: which GGUF (agents.inference.model)

Importing this package does not import llama_cpp; that happens when an engine starts.
"""

from agents.inference.backend import Backend
from agents.inference.engine import Engine, Generation
from agents.inference.factory import MemoryEstimate, build_backend, build_backends
from agents.inference.gpu import GpuInfo, read_gpu, read_gpus
from agents.inference.meter import MeterSnapshot, SlotInfo
from agents.inference.model import check_gguf, embedded_model_path, resolve_model_path
from agents.inference.routed import RoutedBackend, agent_snapshot
from agents.inference.types import ChatMessage, FinishReason, Result, Usage

__all__ = [
    "Backend",
    "ChatMessage",
    "Engine",
    "FinishReason",
    "Generation",
    "GpuInfo",
    "MemoryEstimate",
    "MeterSnapshot",
    "Result",
    "RoutedBackend",
    "SlotInfo",
    "Usage",
    "agent_snapshot",
    "build_backend",
    "build_backends",
    "check_gguf",
    "embedded_model_path",
    "read_gpu",
    "read_gpus",
    "resolve_model_path",
]
