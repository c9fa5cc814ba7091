"""Which notes the cockpit raises in its terminal (the bell, OSC 9/777), from the reads
it makes anyway: pending approvals, tasks, the meter. Plain state, tested without a
terminal. Each approval, failed task and breaker opening is raised once; tasks that had
failed before the cockpit started are not news, an approval still waiting is."""

from __future__ import annotations

import time
from collections.abc import Iterable

from agents.config.schema import NotifyConfig
from agents.inference.meter import MeterSnapshot
from agents.notify.text import Note, approval_note, breaker_note, open_breakers, task_failed_note
from agents.protocol import Approval, Task


def _same(text: str) -> str:
    return text  # the cockpit shows these texts anyway; no secret reaches them unredacted


class TerminalAlerts:
    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self._approvals: set[int] = set()
        self._failed: set[int] | None = None  # None: not read yet (the first read is the past)
        self._breakers: set[str] = set()

    @property
    def on(self) -> bool:
        return bool(self.config.events) and (self.config.bell or self.config.terminal)

    def approvals(self, pending: Iterable[Approval]) -> list[Note]:
        now = time.time()
        new = [a for a in pending if a.id not in self._approvals]
        self._approvals.update(a.id for a in new)
        if "approval.requested" not in self.config.events:
            return []
        return [approval_note(a, now, _same) for a in new]

    def tasks(self, tasks: Iterable[Task]) -> list[Note]:
        failed = {t.id: t for t in tasks if t.status == "failed"}
        if self._failed is None:
            self._failed = set(failed)
            return []
        new = [t for task_id, t in failed.items() if task_id not in self._failed]
        self._failed |= set(failed)
        if "task.failed" not in self.config.events:
            return []
        return [task_failed_note(t.id, t, t.result, time.time(), _same) for t in new]

    def meter(self, snap: MeterSnapshot | None) -> list[Note]:
        if snap is None:
            return []
        opened = open_breakers(snap)
        new, self._breakers = set(opened) - self._breakers, set(opened)
        if "breaker.open" not in self.config.events:
            return []
        return [breaker_note(n, opened[n], time.time(), _same) for n in sorted(new)]
