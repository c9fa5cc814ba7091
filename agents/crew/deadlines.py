"""Per-call deadlines that fit the model: pure arithmetic, no I/O.

A fixed 120 s per model call timed out normal steps of a 1.5B model on a slow CPU while
giving a 135M model ten times the time it needs. So a call's deadline comes from the
engine's measured speed: FACTOR × (prompt tokens / prompt tok/s + new tokens / gen tok/s)
+ SLACK, kept within [FLOOR_S, the config's max_call_s]. A positive per-agent timeout_s
overrides it. When the upper bound cuts the deadline, the token cap shrinks to what the
cut deadline can generate, so the call ends by 'length', not by a timeout. Every plan
carries its reason, so a timeout can say which limit was hit.
"""

from __future__ import annotations

import msgspec

from agents.inference.meter import Speed

FACTOR = 3.0  # speeds swing under load (other processes too): a long wait is cheap, a timeout is not
SLACK_S = 15.0  # queueing for a slot, the scheduler's tick, the first step's setup
FLOOR_S = 60.0  # never less: one noisy measurement must not time out a fast model's step
MIN_TOKENS = 16  # a cap shrunk to fit the upper bound keeps at least this many


class CallLimit(msgspec.Struct, frozen=True, kw_only=True):
    """What one model call may take: seconds, new tokens, and why."""

    timeout_s: float
    max_tokens: int
    reason: str  # "derived from ...", "agents.dev.inference.timeout_s = 30", ...

    def timed_out(self) -> str:
        """The line a timeout reports: which limit was hit."""
        seconds = f"{self.timeout_s:,.0f}" if self.timeout_s >= 10 else f"{self.timeout_s:g}"
        return f"model call timed out after {seconds} s ({self.reason})"


def expected_s(prompt_tokens: int, new_tokens: int, speed: Speed) -> float:
    """Seconds the work takes at the measured speed, before any margin."""
    return prompt_tokens / speed.prompt_tps + new_tokens / speed.gen_tps


def plan_call(prompt_tokens: int, max_tokens: int, speed: Speed | None, *, override_s: float,
              most_s: float, key: str) -> CallLimit:
    """The deadline and token cap of one call.

    override_s > 0: that many seconds, the cap untouched (the person chose them). Else
    derived from `speed`; without a speed (none measured yet): `most_s`. `key` names the
    config key that overrides it, for the message."""
    if override_s > 0:
        return CallLimit(timeout_s=override_s, max_tokens=max_tokens, reason=f"{key} = {override_s:g}")
    if speed is None or speed.prompt_tps <= 0 or speed.gen_tps <= 0:
        return CallLimit(timeout_s=most_s, max_tokens=max_tokens,
                         reason=f"no speed measured yet: inference.max_call_s = {most_s:g}; "
                                f"set {key} to fix it")
    work = (f"{prompt_tokens:,} prompt tokens at {_rate(speed.prompt_tps)} tok/s and "
            f"{max_tokens:,} new tokens at {_rate(speed.gen_tps)} tok/s")
    derived = FACTOR * expected_s(prompt_tokens, max_tokens, speed) + SLACK_S
    floor = min(FLOOR_S, most_s)
    if derived <= most_s:
        return CallLimit(timeout_s=max(derived, floor), max_tokens=max_tokens,
                         reason=f"derived from {work}; set {key} to fix it")
    # Past the bound: keep the bound and generate only what fits in it.
    room_s = (most_s - SLACK_S) / FACTOR - prompt_tokens / speed.prompt_tps
    fits = max(MIN_TOKENS, min(max_tokens, int(room_s * speed.gen_tps)))
    return CallLimit(timeout_s=most_s, max_tokens=fits,
                     reason=f"inference.max_call_s = {most_s:g}, below the {derived:,.0f} s derived from "
                            f"{work}; new tokens cut to {fits:,}")


def _rate(tps: float) -> str:
    return f"{tps:,.0f}" if tps >= 20 else f"{tps:.1f}"


__all__ = ["FACTOR", "FLOOR_S", "SLACK_S", "CallLimit", "expected_s", "plan_call"]
