"""Range checks shared by reducers and the config: a value that validates must never break later.

A float is accepted only when finite and within a sane range (an interval of 5e-324 s
or an approval timeout of inf once stopped the instance from starting); an integer only
when it is a real int (not a bool) within range.
"""

from __future__ import annotations

import math

from agents.errors import InvalidArgument

DAY_S = 86_400.0
YEAR_S = 366 * DAY_S
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = YEAR_S
MAX_APPROVAL_TIMEOUT_S = DAY_S
MAX_FUTURE_S = 10 * YEAR_S  # how far ahead a deadline or a first run may lie

# The engine's sizes, which llama.cpp takes as 32-bit C ints.
MAX_N_CTX = 1 << 20  # the model's trained context and the machine's memory narrow it at start
MAX_SLOTS = 256  # llama.cpp's LLAMA_MAX_SEQ
MAX_N_BATCH = 8192
MAX_THREADS = 1024


def number_in(value: object, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    """`value` as a float in [low, high] (or (low, high] with `low_open`), else InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or number > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise InvalidArgument(f"{name} must be a finite number {bound} and <= {high:g}, got {value!r}")
    return number


def whole_in(value: object, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high], else InvalidArgument (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be {low}..{high}, got {value}")
    return value


def timestamp(value: object, name: str, now: float) -> float:
    """A point in time from the epoch up to MAX_FUTURE_S from now."""
    return number_in(value, name, 0.0, now + MAX_FUTURE_S)
