"""Prompts fitted to a token budget counted with the model's own tokenizer.

The backend counts (`count_tokens`, off the event loop); counts of recent texts are
remembered, so an agent's system prompt is counted once, not at every step. What does
not fit goes oldest first: whole step turns (a model step and its result), marked as
left out; a task text too long on its own is cut in the middle, marked. Before any
counting, a text is cut to CHARS_PER_TOKEN characters per token of the budget: a
tokenizer fed megabytes took minutes (a 10 MB task never reached triage).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from agents.inference.types import ChatMessage

MESSAGE_OVERHEAD = 8  # tokens the chat template adds around each message (role markers)
REMEMBERED = 512  # texts whose counts are kept
CHARS_PER_TOKEN = 16  # a token is rarely longer: text past budget × this cannot fit anyway


def clip(text: str, keep: int) -> str:
    """`text` with at most `keep` of its characters, head and tail, the middle marked."""
    if len(text) <= keep:
        return text
    half = max(keep, 0) // 2
    mark = f"[… {len(text) - 2 * half} characters left out for room …]"
    return f"{text[:half]}\n{mark}\n{text[len(text) - half:]}" if half else mark


class Counts(Protocol):
    async def count_tokens(self, text: str, *, agent: str = "") -> int: ...


class TokenCounter:
    def __init__(self, backend: Counts, *, agent: str = "") -> None:
        self.backend = backend
        self.agent = agent  # whose backend's tokenizer counts (agents may think with different models)
        self._known: OrderedDict[str, int] = OrderedDict()

    async def count(self, text: str) -> int:
        if text in self._known:
            self._known.move_to_end(text)
            return self._known[text]
        n = await self.backend.count_tokens(text, agent=self.agent)
        self._known[text] = n
        if len(self._known) > REMEMBERED:
            self._known.popitem(last=False)
        return n

    async def size(self, messages: list[ChatMessage]) -> int:
        return sum([await self.count(m.content) + MESSAGE_OVERHEAD for m in messages])

    async def fit(self, head: list[ChatMessage], turns: list[ChatMessage], budget: int) -> list[ChatMessage]:
        """head (kept whole unless it alone is too long: then cut, its last message first)
        + as many of the newest turns (pairs) as fit in `budget` tokens."""
        most = max(budget, 1) * CHARS_PER_TOKEN
        turns = [m if len(m.content) <= most else ChatMessage(role=m.role, content=clip(m.content, most))
                 for m in turns]
        head = await self._cut(head, budget)
        room = budget - await self.size(head)
        dropped = 0
        while turns and await self.size(turns) > room:
            turns = turns[2:]
            dropped += 1
        if dropped:
            turns = [ChatMessage(role="user", content=f"({dropped} earlier step(s) left out for room)"),
                     *turns]
        return head + turns

    async def _cut(self, head: list[ChatMessage], budget: int) -> list[ChatMessage]:
        texts = [m.content for m in head]
        # Characters kept of each text: bounded before any counting, so the tokenizer
        # never sees more than the budget could hold.
        keep = [min(len(t), max(budget, 1) * CHARS_PER_TOKEN) for t in texts]

        def shown() -> list[ChatMessage]:
            return [m if keep[i] == len(texts[i]) else ChatMessage(role=m.role, content=clip(t, keep[i]))
                    for i, (m, t) in enumerate(zip(head, texts, strict=True))]

        for _ in range(6):  # each cut is proportional; a few rounds converge
            now = shown()
            over = await self.size(now) - budget
            if over <= 0 or not head:
                return now
            sizes = [await self.count(m.content) for m in now]
            # The last message (the task) gives way first; the system prompt only when it must.
            i = len(head) - 1 if sizes[-1] > over + 16 else max(range(len(head)), key=sizes.__getitem__)
            keep[i] = max(int(keep[i] * (1 - (over + 16) / max(sizes[i], 1))), 0)
        return shown()
