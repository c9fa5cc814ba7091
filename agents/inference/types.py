"""Data that crosses the engine's boundary: requests in, results out (msgspec Structs)."""

from __future__ import annotations

from typing import Literal

import msgspec

FinishReason = Literal["stop", "length", "timeout", "cancelled", "error"]


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a chat; `role` is system, user or assistant (whatever the template knows)."""

    role: str
    content: str


class Usage(msgspec.Struct, kw_only=True):
    """What one request cost. Times are seconds."""

    prompt_tokens: int = 0
    # Prompt tokens already in the slot's KV cache from an earlier request (not re-evaluated).
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_wait_s: float = 0.0  # submit -> admitted to a slot
    decode_s: float = 0.0  # admitted -> finished
    ttft_s: float | None = None  # submit -> first generated token; None when none came

    @property
    def evaluated_prompt_tokens(self) -> int:
        """Prompt tokens the model actually had to run (the cache miss)."""
        return self.prompt_tokens - self.cached_prompt_tokens


class Result(msgspec.Struct, kw_only=True):
    """The final outcome of a request. Never raised: errors come back as finish_reason 'error'."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    agent: str = ""
    slot: int | None = None  # the slot that served it; None if it never got one
    # Engine-wide admission counter (1, 2, ...): the order in which requests got a slot.
    admission: int | None = None
    error: str | None = None
