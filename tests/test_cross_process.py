"""Writes from another process (the CLI in another terminal) reach a running instance."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from helpers import AGENTS, agentdeck_cmd, subprocess_env

from agents.bus import Bus
from agents.protocol import TaskCreated
from agents.store import AsyncStore, EventFilter


async def test_cli_send_reaches_an_in_process_subscriber_within_a_second(
    home: Path, db_path: Path
) -> None:
    store = await AsyncStore(db_path, AGENTS).open()
    bus = await Bus(store, poll_interval=0.1).start()
    try:
        sub = await bus.subscribe("test", EventFilter(kinds=["task.created"], recipient="dev"))
        proc = await asyncio.create_subprocess_exec(
            *agentdeck_cmd("send", "--to", "dev", "from", "another", "terminal"),
            env=subprocess_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        committed_at = time.monotonic()  # the CLI has exited: its write is committed
        assert proc.returncode == 0, err.decode()
        event = await asyncio.wait_for(sub.get(), timeout=1.0)
        seen_after = time.monotonic() - committed_at
        assert isinstance(event.payload, TaskCreated)
        assert event.payload.task.id == int(out)
        assert event.payload.task.title == "from another terminal"
        assert seen_after < 1.0
    finally:
        await bus.close()
        await store.close()
