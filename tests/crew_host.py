"""Helper for test_crew.py: the host with the crew on a scripted backend, in its own
process, so that a test can kill -9 it mid-step.

    python tests/crew_host.py DB_PATH WORKSPACE SCRIPT_JSON [deny|cli]

SCRIPT_JSON maps agent -> list of outputs. Prints `INTERRUPTED <call id>` for each tool
call recovery found interrupted, then `READY`; runs until SIGTERM or a kill.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
from agents.runtime import Host


async def main(db_path: str, workspace: str, outputs: dict[str, list[str]], approvals: str = "deny") -> None:
    config = parse_config(f'workspace = "{workspace}"\nsandbox = "off"\nschedules = []\n')
    backend = ScriptedBackend(queued(outputs))
    async with Host(Path(db_path), config, backend=backend, crew=True, approvals=approvals) as host:  # type: ignore[arg-type]
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, host.stop)
        assert host.recovery is not None
        for call in host.recovery.interrupted:
            print(f"INTERRUPTED {call.id}", flush=True)
        print("READY", flush=True)
        await host.stopping.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(Path(sys.argv[3]).read_text()), *sys.argv[4:5]))
