"""A per-backend circuit breaker: after `failures` failures in a row, stop sending
requests for `open_s` seconds (they fail at once with the reason), then let one through
as a trial; its success closes the breaker, its failure opens it again.

Pure and clock-injected: no I/O, no asyncio; call it on the event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(self, failures: int, open_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or open_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and open_s > 0")
        self.failures = failures
        self.open_s = open_s
        self._clock = clock
        self._in_a_row = 0
        self._opened_at: float | None = None
        self._trial_out = False  # half-open: the one trial request is in flight
        self.last_error = ""  # the failure that opened it (one line), for the meter and doctor

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.open_s:
            return "open"
        return "half-open"

    def retry_in_s(self) -> float:
        """Seconds until a trial request may go; 0 when one may go now."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.open_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a request go now? Half-open lets exactly one through until it reports."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_out:
            return False
        self._trial_out = True
        return True

    def succeeded(self) -> None:
        self._in_a_row = 0
        self._opened_at = None
        self._trial_out = False
        self.last_error = ""

    def failed(self, reason: str = "") -> None:
        self._in_a_row += 1
        if self._trial_out or self._in_a_row >= self.failures:
            self._opened_at = self._clock()
            self.last_error = reason
        self._trial_out = False

    def released(self) -> None:
        """The request that `allow()` let through ended without saying anything about the
        server (cancelled by its caller): a half-open breaker may try again."""
        self._trial_out = False


__all__ = ["BreakerState", "CircuitBreaker"]
