"""Generated token bytes -> text pieces: UTF-8 reassembly and stop strings.

A token can end in the middle of a UTF-8 character, and a stop string can arrive split over
several tokens; so a piece is released only once it can no longer turn into (part of) a stop
string, and the text of a request never contains its stop string. The pieces released,
joined, are always exactly `text` (the result's text); a character left incomplete when
generation ends is dropped, never shown as U+FFFD.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = [s for s in stops if s]
        self.text = ""
        self._emitted = 0  # chars of `text` already released
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to release ('' if none)."""
        if self.stopped:
            return ""
        self.text += self._decoder.decode(data)
        return self._release()

    def finish(self) -> str:
        """The end of generation: release whatever was held back (a partial stop string
        that never completed is text like any other). The bytes of a character the last
        token left incomplete are dropped: the model never finished writing it."""
        self._decoder.reset()
        piece = self.text[self._emitted :]
        self._emitted = len(self.text)
        return piece

    def _release(self) -> str:
        text, start = self.text, self._emitted
        if self._stops:
            # A stop can only start at or after `start`: anything that could have been its
            # beginning was held back, not released.
            hits = [i for i in (text.find(s, start) for s in self._stops) if i >= 0]
            if hits:
                cut = min(hits)
                self.text = text[:cut]
                self.stopped = True
                self._emitted = cut
                return text[start:cut]
            hold = self._held_suffix(text, start)
        else:
            hold = 0
        end = len(text) - hold
        self._emitted = end
        return text[start:end]

    def _held_suffix(self, text: str, start: int) -> int:
        """Length of the longest tail of text[start:] that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text) - start), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
