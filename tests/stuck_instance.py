"""Helper for test_instance.py: `agentdeck run` whose engine gets stuck in blocking calls
that no cancellation reaches, as a tokenizer call on a huge text or a wedged engine
thread would be.

    python tests/stuck_instance.py run --headless ...

The real CLI and the real engine (the model loads), except: counting tokens blocks its
worker thread forever (after printing STUCK on stderr), and stopping the engine never
ends. Only the exit watchdog can end such a process.

    python tests/stuck_instance.py --hold-load run --headless ...

The real CLI and engine, except that the model load is held open (after printing
LOADING on stderr) until a stop is requested: a signal then certainly lands during the
load, however fast the model would load.
"""

from __future__ import annotations

import asyncio
import sys
import threading

from agents.inference import Engine, resolve_model_path
from agents.runtime import Host
from app import cli
from app.commands import run as run_command

FOREVER = threading.Event()  # never set
STOP_REQUESTED = threading.Event()


class StuckEngine(Engine):
    async def count_tokens(self, text: str, *, agent: str = "") -> int:
        sys.stderr.write("STUCK\n")
        sys.stderr.flush()
        await asyncio.to_thread(FOREVER.wait)
        return 0

    async def stop(self) -> None:
        await asyncio.to_thread(FOREVER.wait)


class HeldLoadEngine(Engine):
    async def start(self) -> None:
        sys.stderr.write("LOADING\n")
        sys.stderr.flush()
        await asyncio.to_thread(STOP_REQUESTED.wait)
        await super().start()


def _building(engine_class: type[Engine]):  # type: ignore[no-untyped-def]
    """app.commands.run's build_backends, building this stuck engine instead."""
    def build(config, *, model=None, progress=None, sampling=None, home=None):  # type: ignore[no-untyped-def]
        path = resolve_model_path(model, config.inference.model, home=home)
        return engine_class(config.inference, model_path=path, progress=progress, sampling=sampling)
    return build


def _stop_and_release(host: Host, exit_code: int = 0, *, _stop=Host.stop) -> None:  # type: ignore[no-untyped-def]
    STOP_REQUESTED.set()
    _stop(host, exit_code)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--hold-load"]:
        args = args[1:]
        run_command.build_backends = _building(HeldLoadEngine)
        Host.stop = _stop_and_release  # type: ignore[method-assign]
    else:
        run_command.build_backends = _building(StuckEngine)
    sys.exit(cli.main(args))
