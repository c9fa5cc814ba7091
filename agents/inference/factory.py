"""Which backend to build from the config: the one place that decides, so that no front
end and no bench constructs an engine itself."""

from __future__ import annotations

import os
from pathlib import Path

from agents.config import InferenceConfig, SamplingConfig
from agents.inference.backend import Backend
from agents.inference.engine import Engine
from agents.inference.model import ProgressFn, resolve_model_path


def build_backend(
    inference: InferenceConfig,
    *,
    model: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    sampling: SamplingConfig | None = None,
    home: Path | None = None,
) -> Backend:
    """The backend `inference` asks for, not started yet. `model` (`--model`) overrides
    `inference.model`; either may be a path or the name of a model installed in `home`
    (`agentdeck models`), resolved by `resolve_model_path`, so a missing or non-GGUF file
    or a model not pulled is a ModelError here, before anything starts. `progress` is
    called with 0.0 .. 1.0 on the loading thread; `sampling` sets the request defaults."""
    path = resolve_model_path(model, inference.model, home=home)
    return Engine(inference, model_path=path, sampling=sampling, progress=progress)


__all__ = ["build_backend"]
