"""An agent's live view: what it is doing right now, for front ends to read at their own
pace. Model tokens stream here, not through the durable bus (five streams at a few
hundred tokens a second would swamp the bus and the log); only phase results become
events. Bounded: the text keeps its last LIVE_TEXT characters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

LIVE_TEXT = 4000


@dataclass
class LiveView:
    agent: str
    state: str = "idle"
    task_id: int | None = None
    phase: str = ""  # triage, step 3, reflect, combine
    text: str = ""  # the model's output streaming now (its tail)
    last_tool: str | None = None
    last_tool_outcome: str = ""  # ok, error, denied, … ("" while it runs)
    tokens: int = 0  # pieces of the current call
    fed: int = 0  # characters of the current call so far (text keeps only the tail)
    call_started: float = field(default_factory=time.monotonic)  # also when the phase began
    step: int = 0  # the act phase's step now (1-based), 0 outside it
    max_steps: int = 0  # the most steps this task may take
    note: str = ""  # what a person should know about the call now ("retrying: …"), else ""
    # Totals since start, for the orchestration overhead (work outside model and tools).
    work_s: float = 0.0  # tasks being worked (not waiting in a queue or blocked)
    model_s: float = 0.0
    tool_s: float = 0.0  # approval waits included
    steps: int = 0

    def begin_call(self, phase: str) -> None:
        self.phase, self.text, self.tokens, self.fed, self.note = phase, "", 0, 0, ""
        self.call_started = time.monotonic()

    def feed(self, piece: str) -> None:
        self.text = (self.text + piece)[-LIVE_TEXT:]
        self.tokens += 1
        self.fed += len(piece)

    @property
    def tokens_per_s(self) -> float:
        elapsed = time.monotonic() - self.call_started
        return self.tokens / elapsed if elapsed > 0 else 0.0
