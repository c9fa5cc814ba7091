"""Local inference: one llama.cpp model shared by all agents through continuous batching.

Public API (import from here):
- Engine, Generation: the engine thread and a submitted request (agents.inference.engine)
- ChatMessage, Result, Usage, FinishReason: request/result data (agents.inference.types)
- MeterSnapshot, SlotInfo: the slot meter (agents.inference.meter)
- GpuInfo, read_gpu, read_gpus: NVML readings, None without a GPU (agents.inference.gpu)
- resolve_model_path, embedded_model_path, check_gguf: which GGUF (agents.inference.model)

Importing this package does not import llama_cpp; that happens when an engine starts.
"""

from agents.inference.engine import Engine, Generation
from agents.inference.gpu import GpuInfo, read_gpu, read_gpus
from agents.inference.meter import MeterSnapshot, SlotInfo
from agents.inference.model import check_gguf, embedded_model_path, resolve_model_path
from agents.inference.types import ChatMessage, FinishReason, Result, Usage

__all__ = [
    "ChatMessage",
    "Engine",
    "FinishReason",
    "Generation",
    "GpuInfo",
    "MeterSnapshot",
    "Result",
    "SlotInfo",
    "Usage",
    "check_gguf",
    "embedded_model_path",
    "read_gpu",
    "read_gpus",
    "resolve_model_path",
]
