"""Is a process still there? For the instance row (a dead instance's row is taken over)
and tool calls (only a dead process's running call is interrupted on recovery)."""

from __future__ import annotations

import os

import psutil

# psutil derives start times from clock ticks since boot (1/100 s on Linux), so one
# process reads the same value every time; the slack only absorbs float rounding.
START_TIME_SLACK_S = 0.5

_this_process: tuple[int, float] | None = None


def this_process() -> tuple[int, float]:
    """(pid, start time) of the running process; read again after a fork."""
    global _this_process
    if _this_process is None or _this_process[0] != os.getpid():
        _this_process = (os.getpid(), psutil.Process().create_time())
    return _this_process


def process_alive(pid: int, started: float | None = None) -> bool:
    """Is a process with this pid running on this machine, and (given `started`) the one
    that started then, not a new one that got the same pid? A zombie (killed, not yet
    reaped by its parent) is not alive: it will never do anything again."""
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > START_TIME_SLACK_S:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by another user: cannot say, so leave it
        return True
