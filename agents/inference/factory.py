"""Which backends to build from the config: the one place that decides, so that no front
end and no bench constructs an engine itself.

`build_backends` builds every backend some enabled agent (or default_backend) uses: the
plain `Engine` when that is only the embedded one (no routing layer for the default),
otherwise a `RoutedBackend` over embedded engines and OpenAI-compatible servers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
import psutil

from agents.config import Config, InferenceConfig, SamplingConfig
from agents.config.load import EMBEDDED_BACKEND
from agents.config.schema import BackendConfig
from agents.errors import ModelError
from agents.inference.backend import Backend
from agents.inference.engine import Engine
from agents.inference.model import GIB, ProgressFn, offloads_to_gpu, read_shape, resolve_model_path
from agents.inference.routed import RoutedBackend

log = logging.getLogger("agents.inference")


class MemoryEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """What an embedded model will take once loaded, estimated before loading it."""

    backend: str
    model: str  # file name
    weights_bytes: int  # the GGUF's size: llama.cpp maps the file's tensors as they are
    kv_bytes: int  # the KV cache at the configured n_ctx (0: the file does not say)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes


def build_backend(
    inference: InferenceConfig,
    *,
    model: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    sampling: SamplingConfig | None = None,
    home: Path | None = None,
) -> Backend:
    """The embedded engine `inference` asks for, not started yet. `model` (`--model`)
    overrides `inference.model`; either may be a path or the name of a model installed in
    `home` (`agentdeck models`), resolved by `resolve_model_path`, so a missing or non-GGUF
    file or a model not pulled is a ModelError here, before anything starts. `progress` is
    called with 0.0 .. 1.0 on the loading thread; `sampling` sets the request defaults."""
    path = resolve_model_path(model, inference.model, home=home)
    return Engine(inference, model_path=path, sampling=sampling, progress=progress)


def backends_in_use(config: Config) -> list[str]:
    """The backends some enabled agent thinks with, and the default (which serves the
    rest), in a stable order: the default first."""
    used = [config.default_backend]
    for agent in config.enabled_agents().values():
        name = agent.model or config.default_backend
        if name not in used:
            used.append(name)
    return used


def build_backends(
    config: Config,
    *,
    model: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    sampling: SamplingConfig | None = None,
    home: Path | None = None,
) -> Backend:
    """Every backend the config uses, not started yet. `model` (`--model`) replaces the
    embedded backend's model; `progress` follows the embedded backend's load. A model that
    cannot be found, or embedded models that together cannot fit in memory, is a
    ModelError here, before anything loads."""
    used = backends_in_use(config)
    if used == [EMBEDDED_BACKEND]:
        return build_backend(_embedded_inference(config, EMBEDDED_BACKEND), model=model,
                             progress=progress, sampling=sampling, home=home)
    backends: dict[str, Backend] = {}
    estimates: list[MemoryEstimate] = []
    for name in used:
        settings = _settings(config, name)
        if settings.kind == "embedded":
            inference = _embedded_inference(config, name)
            try:
                path = resolve_model_path(model if name == EMBEDDED_BACKEND else None, inference.model,
                                          home=home)
            except ModelError as err:
                raise ModelError(f"backend {name}: {err}") from None
            estimates.append(estimate_memory(name, path, inference))
            backends[name] = Engine(inference, model_path=path, sampling=sampling,
                                    progress=progress if name == EMBEDDED_BACKEND else None)
        else:
            from agents.inference.openai_backend import OpenAIBackend  # httpx/openai only when used

            backends[name] = OpenAIBackend(name, settings, inference=config.inference, sampling=sampling)
    _check_room(estimates, config.inference)
    routes = {agent: a.model or config.default_backend for agent, a in config.enabled_agents().items()}
    return RoutedBackend(backends, routes, config.default_backend,
                         required=[n for n in used if _settings(config, n).kind == "embedded"],
                         memory={e.backend: e for e in estimates})


def estimate_memory(backend: str, path: Path, inference: InferenceConfig) -> MemoryEstimate:
    """Weights (the file) plus the KV cache at inference.n_ctx, read from the file's
    metadata without loading its weights; logged, so two models say what they take."""
    shape = read_shape(path)
    estimate = MemoryEstimate(backend=backend, model=path.name, weights_bytes=path.stat().st_size,
                              kv_bytes=shape.kv_bytes(inference.n_ctx) if shape is not None else 0)
    log.info("backend %s: %s needs ~%.2f GiB (weights %.2f GiB, KV cache %.2f GiB at n_ctx %d)",
             backend, path.name, estimate.total_bytes / GIB, estimate.weights_bytes / GIB,
             estimate.kv_bytes / GIB, inference.n_ctx)
    return estimate


def _check_room(estimates: list[MemoryEstimate], inference: InferenceConfig) -> None:
    """Several embedded models in this process's memory: refuse before loading when they
    cannot all fit (each engine checks only itself, and they load at once). On a GPU the
    layers go to its memory instead; each engine checks that as it loads."""
    if len(estimates) < 2 or offloads_to_gpu(inference.n_gpu_layers):
        return
    need = sum(e.total_bytes for e in estimates)
    room = psutil.virtual_memory().available
    if need > room:
        parts = ", ".join(f"{e.backend} ~{e.total_bytes / GIB:.1f} GiB" for e in estimates)
        raise ModelError(f"the embedded backends need ~{need / GIB:.1f} GiB together ({parts}); the machine "
                         f"has {room / GIB:.1f} GiB available; lower inference.n_ctx or use fewer models")


def _settings(config: Config, name: str) -> BackendConfig:
    if name in config.backends:
        return config.backends[name]
    if name == EMBEDDED_BACKEND:
        return BackendConfig(kind="embedded")
    raise ModelError(f"no backend named {name!r}")  # the config check refuses this first


def _embedded_inference(config: Config, name: str) -> InferenceConfig:
    """[inference] with the backend's own model, when it names one."""
    settings = config.backends.get(name)
    if settings is None or not settings.model:
        return config.inference
    return msgspec.structs.replace(config.inference, model=settings.model)


__all__ = ["MemoryEstimate", "backends_in_use", "build_backend", "build_backends", "estimate_memory"]
