"""Which backend to build from the config: the one place that decides, so that no front
end and no bench constructs an engine itself."""

from __future__ import annotations

import os

from agents.config import InferenceConfig, SamplingConfig
from agents.inference.backend import Backend
from agents.inference.engine import Engine
from agents.inference.model import ProgressFn


def build_backend(
    inference: InferenceConfig,
    *,
    model: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    sampling: SamplingConfig | None = None,
) -> Backend:
    """The backend `inference` asks for, not started yet. `model` (`--model`) overrides
    `inference.model`; the path is resolved as `resolve_model_path` does, so a missing or
    non-GGUF file is a ModelError here, before anything starts. `progress` is called with
    0.0 .. 1.0 on the loading thread; `sampling` sets the request defaults."""
    return Engine(inference, model_path=model, sampling=sampling, progress=progress)


__all__ = ["build_backend"]
