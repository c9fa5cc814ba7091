"""One Backend over several named ones: each agent's requests go to its own backend
(`agents.NAME.model`, else `default_backend`), so the crew keeps talking to one object.

Starting: every backend at once. An embedded engine that cannot load is fatal (a local
file or memory problem the person must fix before anything runs), and so is a config
error anywhere (a refused key); a remote backend that fails otherwise (its server lacks
the model) is not: the other agents carry on, and that backend's requests end at once
with an 'error' result naming it, which the meter shows as a failed backend. (An
unreachable server is not even that: OpenAIBackend starts, its breaker open.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from agents.config import InferenceConfig, SamplingConfig
from agents.errors import ConfigError, ModelError
from agents.inference.backend import Backend
from agents.inference.chat import MessageLike
from agents.inference.generation import Generation, deliver
from agents.inference.meter import MeterSnapshot, SlotInfo, summarize
from agents.inference.types import Result, Usage

if TYPE_CHECKING:
    from agents.inference.factory import MemoryEstimate

log = logging.getLogger("agents.inference")

STOP_S = 2.5  # each backend's stop, all at once; within the host's shutdown step (3 s)


class RoutedBackend:
    """Meets `Backend`. `routes`: agent -> backend name; an agent not listed (the scribe's
    compactions, a bench's probe) goes to `default`. `required`: backends whose failure
    to start is fatal (the embedded engines)."""

    def __init__(self, backends: Mapping[str, Backend], routes: Mapping[str, str], default: str, *,
                 required: Collection[str] = (), stop_s: float = STOP_S,
                 memory: Mapping[str, MemoryEstimate] | None = None) -> None:
        if default not in backends:
            raise ValueError(f"default backend {default!r} is not among {sorted(backends)}")
        missing = sorted({name for name in routes.values() if name not in backends})
        if missing:
            raise ValueError(f"routes name unknown backends: {missing}")
        self.backends = dict(backends)
        self.routes = dict(routes)
        self.default = default
        self.required = frozenset(required)
        self.stop_s = stop_s
        # Embedded models' estimated memory, by backend (the factory's, before loading).
        self.memory: dict[str, MemoryEstimate] = dict(memory or {})
        self.down: dict[str, str] = {}  # backend -> why it did not start (remote ones only)

    # --- routing -------------------------------------------------------------------------

    def backend_name(self, agent: str) -> str:
        """The name of the backend that serves `agent`."""
        return self.routes.get(agent, self.default)

    def backend_for(self, agent: str) -> Backend:
        return self.backends[self.backend_name(agent)]

    # --- the Backend protocol ------------------------------------------------------------

    @property
    def config(self) -> InferenceConfig | None:
        """The default backend's: the host budgets prompts from it."""
        return self.backends[self.default].config

    @property
    def load_time_s(self) -> float | None:
        """They load at once: the slowest one's time, None until one has loaded."""
        times = [t for b in self.backends.values() if (t := b.load_time_s) is not None]
        return max(times) if times else None

    async def start(self) -> None:
        names = list(self.backends)
        outcomes = await asyncio.gather(*(self.backends[n].start() for n in names), return_exceptions=True)
        fatal: list[str] = []
        config_only = True  # every fatal one a config error: say so by the error's kind
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if not isinstance(outcome, BaseException):
                continue
            why = _one_line(outcome).removeprefix(f"backend {name}: ")
            # A config the person must fix (a refused key) is fatal wherever it is.
            if name in self.required or isinstance(outcome, ConfigError):
                fatal.append(why if why.startswith(f"backends.{name}.") else f"backend {name}: {why}")
                config_only = config_only and isinstance(outcome, ConfigError)
            else:
                self.down[name] = why
                log.warning("backend %s did not start (its agents' requests fail until it is restarted): %s",
                            name, why)
        if fatal:
            await self.stop()  # the ones that did load must not linger
            raise (ConfigError if config_only else ModelError)("; ".join(fatal))

    async def stop(self) -> None:
        """Every backend at once, each given `stop_s`; one that hangs is left behind (logged)."""
        tasks = {name: asyncio.ensure_future(b.stop()) for name, b in self.backends.items()}
        # Not wait_for: a stop that swallows cancellation would hold us past the bound.
        await asyncio.wait(tasks.values(), timeout=self.stop_s)
        for name, task in tasks.items():
            if not task.done():
                task.cancel()
                log.warning("stopping backend %s took over %.1f s; going on without it", name, self.stop_s)
            elif not task.cancelled() and (err := task.exception()) is not None:
                log.warning("stopping backend %s failed: %s", name, _one_line(err))

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
        name = self.backend_name(agent)
        if name in self.down:
            return _failed(agent, f"backend {name} is not running: {self.down[name]}")
        return self.backends[name].submit(
            messages, agent=agent, sampling=sampling, schema=schema, max_tokens=max_tokens, stop=stop,
            priority=priority, timeout_s=timeout_s, deadline=deadline, ignore_eos=ignore_eos)

    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        """Counted by the agent's own backend: models differ in their tokenizers."""
        return await self.backend_for(agent).count_tokens(text)

    def snapshot(self) -> MeterSnapshot:
        """All backends in one meter: their slots one after another (numbered through, each
        labelled with its backend), work summed, one summary per backend (its state, load,
        speed); state, speed and config are the default backend's."""
        snaps = self.snapshots()
        main = snaps[self.default]
        slots: list[SlotInfo] = []
        waiting: dict[int, int] = {}
        for name, snap in snaps.items():
            slots += [msgspec.structs.replace(s, index=len(slots) + i, backend=name)
                      for i, s in enumerate(snap.slots)]
            for priority, n in snap.waiting.items():
                waiting[priority] = waiting.get(priority, 0) + n
        return MeterSnapshot(
            ts=max(s.ts for s in snaps.values()),
            state=main.state,
            device=", ".join(dict.fromkeys(s.device for s in snaps.values())),
            model=", ".join(f"{name}: {s.model}" for name, s in snaps.items()),
            slots=slots,
            waiting=waiting,
            kv_used=sum(s.kv_used for s in snaps.values()),
            kv_total=sum(s.kv_total for s in snaps.values()),
            tokens_per_s=sum(s.tokens_per_s for s in snaps.values()),
            gpu=next((s.gpu for s in snaps.values() if s.gpu is not None), None),
            speed=main.speed,
            kind=main.kind,
            detail=main.detail,
            backends=[summarize(name, snap) for name, snap in snaps.items()],
        )

    # --- per backend, per agent ------------------------------------------------------------

    def snapshots(self) -> dict[str, MeterSnapshot]:
        """Each backend's own meter, by name; one that did not start reads 'failed', with why."""
        out = {}
        for name, backend in self.backends.items():
            snap = backend.snapshot()
            if name in self.down:
                snap = msgspec.structs.replace(snap, state="failed", detail=self.down[name])
            out[name] = snap
        return out

    def snapshot_for(self, agent: str) -> MeterSnapshot:
        """The meter of the backend that serves `agent`: its speed sets that agent's deadlines."""
        return self.backend_for(agent).snapshot()


def agent_snapshot(backend: Backend, agent: str) -> MeterSnapshot:
    """The meter of whichever backend serves `agent`: the routed one's, or the only one."""
    if isinstance(backend, RoutedBackend):
        return backend.snapshot_for(agent)
    return backend.snapshot()


def _failed(agent: str, error: str) -> Generation:
    """A Generation that has already ended in an 'error' result."""
    gen = Generation(asyncio.get_running_loop(), 1, threading.Event(), deadline=time.monotonic(), agent=agent)
    result = Result(text="", finish_reason="error", usage=Usage(), agent=agent, error=error)
    deliver([(gen, "", result)])
    return gen


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


__all__ = ["STOP_S", "RoutedBackend", "agent_snapshot"]
