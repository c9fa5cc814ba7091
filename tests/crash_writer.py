"""Helper for test_crash.py: write to the store in a loop until killed (kill -9).

    python tests/crash_writer.py DB_PATH [STALL_AFTER]

Prints one line per fact, flushed, and only AFTER the fact is durable:
    TASK <task_id>      create_task committed
    CALL <call_id>      start_tool_call committed (left running on purpose)
    CONSUMED <event_id> the durable reader "crash-reader" finished with this event
A line is written with one write() call, so a kill never leaves half a line behind.
With STALL_AFTER > 0 the reader stops after that many events without asking for the next
one, so the last of them stays unacknowledged while the writer goes on.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agents.bus import Bus
from agents.protocol import OWNER
from agents.store import AsyncStore
from agents.store.reducers import create_task, set_task_status, start_tool_call

AGENTS = ("lead", "dev", "review", "ops", "scribe")
READER = "crash-reader"


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


async def consume(bus: Bus, stall_after: int) -> None:
    sub = await bus.subscribe(READER, start="beginning", maxsize=4)
    count = 0
    async for event in sub:  # the previous event is acked when the next one is requested
        say(f"CONSUMED {event.id}")
        count += 1
        if count == stall_after:
            await asyncio.Event().wait()  # stuck for good, like a hung consumer
        await asyncio.sleep(0.001)  # a reader a bit slower than the writer


async def main(db_path: str, stall_after: int) -> None:
    store = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(store).start()
    reader = asyncio.create_task(consume(bus, stall_after))
    say("READY")
    i = 0
    while True:
        agent = AGENTS[i % len(AGENTS)]
        task = await store.write(create_task, OWNER, f"crash {i}", owner=agent)
        say(f"TASK {task.id}")
        if i % 3 == 0:
            call = await store.write(start_tool_call, agent, "shell", {"i": i}, task_id=task.id)
            say(f"CALL {call.id}")
        elif i % 3 == 1:
            await store.write(set_task_status, agent, task.id, "active")
        i += 1
        if reader.done():
            reader.result()  # surface a crashed reader instead of writing on without it


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
