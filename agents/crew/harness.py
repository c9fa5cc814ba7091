"""The levers that make a small model useful, each switchable so that
`agentdeck bench crew --suite --ablate` can measure what each is worth."""

from __future__ import annotations

import msgspec


class Harness(msgspec.Struct, frozen=True, kw_only=True):
    grammar: bool = True  # every model call constrained by a grammar from its schema
    rules_first: bool = True  # rule-based triage and first steps before any model call
    examples: bool = True  # one concrete example call per tool in the system prompt
    result_chars: int = 1200  # of a tool result fed back to the model (compact)


DEFAULT = Harness()

# What `--ablate` turns off, one at a time, against the default.
ABLATIONS: dict[str, Harness] = {
    "no grammar": Harness(grammar=False),
    "no rules first": Harness(rules_first=False),
    "no tool examples": Harness(examples=False),
    "whole results": Harness(result_chars=16_000),
}
