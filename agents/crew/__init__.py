"""The crew: agents that triage, act and reflect on tasks, through the gate, on the
shared inference backend. No Textual."""

from agents.crew.crew import Crew, route
from agents.crew.live import LiveView

__all__ = ["Crew", "LiveView", "route"]
