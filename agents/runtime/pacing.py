"""Frame pacing for the cockpit's timer: the UI must not take the inference's CPU.

Once a second the pacer measures the CPU its thread used; above the budget it skips
one more frame per frame drawn (at most MOST_SKIPPED: a quarter of the rate), and
well under it one fewer. On 2 cores, five streams redrawn at 15 Hz cost the engine
40% of its speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

UI_CPU_BUDGET = 0.2  # of one core, for the UI thread (drawing, reading the deck)
MOST_SKIPPED = 3  # frames skipped per frame drawn, at most
MEASURE_EVERY_S = 1.0


class FramePacer:
    def __init__(self, budget: float = UI_CPU_BUDGET, most_skipped: int = MOST_SKIPPED, *,
                 wall: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.budget = budget
        self.most_skipped = most_skipped
        self.skipping = 0  # frames skipped per frame drawn, now
        self._wall, self._cpu = wall, cpu
        self._frames = 0
        self._mark = (wall(), cpu())

    def frame(self) -> bool:
        """A tick of the timer: whether to draw this frame."""
        self._frames += 1
        self._measure()
        return self._frames % (self.skipping + 1) == 0

    def _measure(self) -> None:
        wall, cpu = self._wall(), self._cpu()
        elapsed = wall - self._mark[0]
        if elapsed < MEASURE_EVERY_S:
            return
        share = (cpu - self._mark[1]) / elapsed
        self._mark = (wall, cpu)
        if share > self.budget and self.skipping < self.most_skipped:
            self.skipping += 1
        elif share < self.budget / 2 and self.skipping > 0:
            self.skipping -= 1
