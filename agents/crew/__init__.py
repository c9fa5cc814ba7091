"""The crew: agents that triage, act and reflect on tasks, through the gate, on the
shared inference backend. No Textual."""

from agents.crew.live import LiveView
from agents.crew.team import Crew, route

__all__ = ["Crew", "LiveView", "route"]
