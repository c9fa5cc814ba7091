"""The one inference backend protocol: what the host, the crew, the deck and the benches
need of whatever answers chat requests (the llama.cpp `Engine`, the `ScriptedBackend` of
the flow tests, the OpenAI-compatible `OpenAIBackend`, the `RoutedBackend` that sends each
agent to its own). Build them with `agents.inference.factory.build_backends`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from agents.config import InferenceConfig, SamplingConfig
from agents.inference.chat import MessageLike
from agents.inference.generation import Generation
from agents.inference.meter import MeterSnapshot


@runtime_checkable
class Backend(Protocol):
    """Start it, submit requests on the event loop, read its meter, stop it."""

    @property
    def config(self) -> InferenceConfig | None:
        """The inference config it really runs with (the engine may lower n_ctx to what
        the model can use), or None when it has none of its own (scripted): the caller's
        stands."""
        ...

    @property
    def load_time_s(self) -> float | None:
        """Seconds the model took to load; None before it has."""
        ...

    async def start(self) -> None:
        """Load; raise ModelError when it cannot."""
        ...

    async def stop(self) -> None:
        """Finish every request (cancelled) and let go of everything it holds."""
        ...

    def submit(
        self,
        messages: Sequence[MessageLike],
        *,
        agent: str = "",
        sampling: SamplingConfig | None = None,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        priority: int = 0,
        timeout_s: float | None = None,
        deadline: float | None = None,
        ignore_eos: bool = False,
    ) -> Generation:
        """Queue a chat request; never blocks. Trouble comes back as an 'error' Result."""
        ...

    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        """Tokens the model makes of `text`, counted off the event loop; `agent`: counted by
        the model that agent thinks with (one backend may route agents to several)."""
        ...

    def snapshot(self) -> MeterSnapshot:
        """The slot meter; cheap, never blocks."""
        ...


__all__ = ["Backend"]
