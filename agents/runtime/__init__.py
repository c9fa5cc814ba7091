"""The runtime both front ends share: the host (claim, heartbeats, recovery, housekeeping,
approval policy, shutdown). The crew will live beside it."""

from agents.runtime.host import Host, Recovery

__all__ = ["Host", "Recovery"]
