"""What `bench crew --suite` reports: each task run, and the figures per harness."""

from __future__ import annotations

import msgspec


class TaskResult(msgspec.Struct, kw_only=True):
    name: str
    agent: str
    prompt: str
    status: str  # the task's status at the end ("?" if it was not found)
    done: bool
    correct: bool  # done, and the checker agreed
    reason: str  # the checker's, or why it was not judged
    answer: str
    wall_s: float
    acted: list[str] = []  # the harness levers that acted in it (TaskRunner.acted), sorted
    carried: bool = False  # not run: the default's result, as the levers turned off never acted in it


class Share(msgspec.Struct, frozen=True):
    median: float
    low: float
    high: float


class TaskTally(msgspec.Struct, kw_only=True):
    name: str
    agent: str
    done: int  # rounds in which it ended done
    correct: int  # rounds in which it was verified correct


class SuiteFigures(msgspec.Struct, kw_only=True):
    model: str
    harness: str  # "default" or the lever turned off
    tasks: int
    rounds: int
    done_share: Share  # over rounds
    correct_share: Share
    per_task: list[TaskTally]
    results: list[list[TaskResult]]  # per round, per task
