"""Helper for test_instance.py: `agentdeck run` whose engine gets stuck in blocking calls
that no cancellation reaches, as a tokenizer call on a huge text or a wedged engine
thread would be.

    python tests/stuck_instance.py run --headless ...

The real CLI and the real engine (the model loads), except: counting tokens blocks its
worker thread forever (after printing STUCK on stderr), and stopping the engine never
ends. Only the exit watchdog can end such a process.
"""

from __future__ import annotations

import asyncio
import sys
import threading

from agents.inference import Engine
from app import cli, instance

FOREVER = threading.Event()  # never set


class StuckEngine(Engine):
    async def count_tokens(self, text: str) -> int:
        sys.stderr.write("STUCK\n")
        sys.stderr.flush()
        await asyncio.to_thread(FOREVER.wait)
        return 0

    async def stop(self) -> None:
        await asyncio.to_thread(FOREVER.wait)


if __name__ == "__main__":
    instance.Engine = StuckEngine  # type: ignore[misc]
    sys.exit(cli.main(sys.argv[1:]))
