"""A submitted request as asyncio sees it: a stream of text pieces and a final Result.

The engine thread never touches a Generation's queue or future directly: it hands each
event loop one list per step through `loop.call_soon_threadsafe(deliver, items)`. The token
queue is bounded at max_tokens + 2, one more than the items it can ever receive (at most one
piece per token, one flush, one end marker), so `put_nowait` never fails and the engine
thread never blocks on a slow consumer.

Waiting is bounded even if the engine never answers (its thread died, or a submit raced
stop()): past the request's deadline plus a grace, a reader cancels the request and gets a
'timeout' result of its own instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from agents.inference.types import Result, Usage

log = logging.getLogger("agents.inference")

_END = object()  # end-of-stream marker in a Generation's token queue
# The engine answers at the deadline (or within one decode step of it); a reader waits this
# much longer before it decides the engine is gone.
_ANSWER_GRACE_S = 5.0


class Generation:
    """One submitted request, seen from asyncio.

    `async for piece in gen` yields text as it is generated; `await gen` (or
    `await gen.result()`) gives the final Result. The request is cancelled and its slot
    freed by `cancel()`, by cancelling a task that is iterating or awaiting it, by leaving
    `async for` early (`break`, an exception), by `await gen.aclose()`, and by leaving
    `async with gen:`. A cancelled request's result says 'cancelled'.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_tokens: int,
        wake: threading.Event,
        *,
        deadline: float | None = None,
        agent: str = "",
    ) -> None:
        self._loop = loop
        self._wake = wake  # the engine thread's wake-up event
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_tokens + 2)
        self._future: asyncio.Future[Result] = loop.create_future()
        self._stream_done = False
        self._pieces: list[str] = []  # what was delivered, for a result of our own
        # time.monotonic() by which the engine will have answered; None: wait unbounded.
        self.deadline = deadline
        self.agent = agent
        # Read by the engine thread: a plain attribute write is atomic under the GIL.
        self.cancel_requested = False

    def cancel(self) -> None:
        """Stop generating; the result will say 'cancelled'. Safe to call more than once."""
        if not self._future.done():
            self.cancel_requested = True
            self._wake.set()

    def done(self) -> bool:
        return self._future.done()

    async def aclose(self) -> None:
        """Stop listening: cancel the request unless it has finished. Safe to call twice."""
        self.cancel()

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[str]:
        # An async generator, so that leaving `async for` early runs its `finally`: at once
        # for an exception or a cancelled task, and after `break` when the dropped generator
        # is finalised (asyncio's asyncgen hooks schedule its aclose() on the loop).
        return self._stream()

    async def _stream(self) -> AsyncIterator[str]:
        try:
            while True:
                try:
                    piece = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield piece
        finally:
            if not self._future.done():  # the consumer left before the end
                self.cancel()

    async def __anext__(self) -> str:
        if self._stream_done:
            raise StopAsyncIteration
        try:
            item = await self._bounded(self._queue.get)
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is _END:
            self._stream_done = True
            raise StopAsyncIteration
        return item

    async def result(self) -> Result:
        try:
            # shield: a cancelled waiter must not cancel the future the engine will resolve.
            return await self._bounded(lambda: asyncio.shield(self._future))
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def _bounded(self, wait: Any) -> Any:
        """`await wait()`, but give up past the deadline plus the grace (see _give_up)."""
        if self.deadline is None:
            return await wait()
        left = self.deadline + _ANSWER_GRACE_S - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, left)):
                return await wait()
        except TimeoutError:
            self._give_up()
            return await wait()  # answered now: the end marker is queued, the future set

    def _give_up(self) -> None:
        """The engine did not answer in time: cancel, and finish with a result of our own
        (a late answer from the engine is then ignored)."""
        self.cancel()
        self._finish(
            Result(
                text="".join(self._pieces),
                finish_reason="timeout",
                usage=Usage(),
                agent=self.agent,
                error=f"inference engine did not answer within {_ANSWER_GRACE_S:g}s "
                "of the request's deadline",
            )
        )

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.result().__await__()

    # -- called on the loop, from the engine thread via call_soon_threadsafe --

    def _push(self, piece: str) -> None:
        if self._future.done():  # we gave up on the engine; its late pieces go nowhere
            return
        self._pieces.append(piece)
        try:
            self._queue.put_nowait(piece)
        except asyncio.QueueFull:  # cannot happen (see the module docstring)
            log.error("token queue full; piece dropped from the stream (result keeps it)")

    def _finish(self, result: Result) -> None:
        if self._future.done():
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_END)
        self._future.set_result(result)


def deliver(items: list[tuple[Generation, str, Result | None]]) -> None:
    for gen, piece, result in items:
        if piece:
            gen._push(piece)
        if result is not None:
            gen._finish(result)
