"""What the model may say at each phase, as JSON schemas (which become grammars, so the
model cannot say anything else) and as msgspec Structs to decode it strictly.

A step is either a tool call — one of the agent's own tools, with arguments that follow
that tool's schema, and optionally the model's own short reason for it (what a person
deciding an approval reads as "agent says") — or a final answer. A model cannot name a
tool it does not have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from agents.tools import TOOLS
from agents.tools.base import Tool

TriageAction = Literal["act", "delegate", "defer", "ignore"]
Outcome = Literal["success", "partial", "failure"]


class Triage(msgspec.Struct, forbid_unknown_fields=True):
    action: TriageAction
    reason: str
    delegate_to: str | None = None


class Reflection(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Outcome
    lesson: str
    importance: int
    tags: list[str] = msgspec.field(default_factory=list)


class ToolStep(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    tool: str
    arguments: dict[str, Any]
    reason: str | None = None  # the model's words, if it gave any


class FinalStep(msgspec.Struct, forbid_unknown_fields=True):
    final: str


Step = ToolStep | FinalStep


def _text() -> dict[str, Any]:
    # No maxLength: the grammar would spell out every length; max_tokens bounds it.
    return {"type": "string"}


def triage_schema(agents: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "action": {"enum": ["act", "delegate", "defer", "ignore"]},
            "reason": _text(),
            "delegate_to": {"anyOf": [{"enum": agents}, {"type": "null"}]},
        },
        "required": ["action", "reason"],
        "additionalProperties": False,
    }


def reflection_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "outcome": {"enum": ["success", "partial", "failure"]},
            "lesson": _text(),
            "importance": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9-]{1,20}$"},
                     "maxItems": 4},
        },
        "required": ["outcome", "lesson", "importance"],
        "additionalProperties": False,
    }


def _without_lengths(schema: Any) -> Any:
    """A tool's schema without string length bounds: llama.cpp spells each length out as a
    grammar rule and refuses past about a thousand (calculate's 2000 characters did). The
    gate still checks them when it parses the call."""
    if isinstance(schema, dict):
        return {k: _without_lengths(v) for k, v in schema.items() if k not in ("maxLength", "minLength")}
    if isinstance(schema, list):
        return [_without_lengths(v) for v in schema]
    return schema


def step_schema(tools: list[str], *, final: bool = True, catalog: Mapping[str, Tool] = TOOLS,
                narrowed: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One alternative per allowed tool (its name a constant, its arguments its own
    schema, or the narrower one `narrowed` gives for it), plus the final answer unless
    `final` is off (grounding: look first). The gate still checks every call against
    the tool's own schema."""
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = []
    for name in tools:
        if narrowed and name in narrowed:
            arguments = narrowed[name]
        else:
            schema = _without_lengths(msgspec.json.schema(catalog[name].args))
            defs.update(schema.get("$defs", {}))
            arguments = {"$ref": schema["$ref"]}
        options.append({
            "type": "object",
            # reason is optional and last: a model may skip it and nothing waits on it.
            "properties": {"tool": {"const": name}, "arguments": arguments,
                           "reason": _text()},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        })
    if final or not options:
        options.append({"type": "object", "properties": {"final": _text()}, "required": ["final"],
                        "additionalProperties": False})
    return {"anyOf": options, "$defs": defs}


def parse_step(text: str, tools: list[str], only_final: str = "", no_final: str = "") -> Step:
    """Strict: raises ValueError naming what is wrong (the caller retries once).
    only_final: why this step offers no tools, said when the model names one anyway;
    no_final: why it offers no final answer (without a grammar a model may give one)."""
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError("a step is a JSON object")
    if "final" in raw and no_final and tools:
        raise ValueError(no_final)
    step_type: type[ToolStep] | type[FinalStep] = FinalStep if "final" in raw else ToolStep
    try:
        step = msgspec.convert(raw, step_type, strict=True)
    except msgspec.ValidationError as err:
        raise ValueError(f"not a step: {err}") from None
    if isinstance(step, ToolStep) and step.tool not in tools:
        if only_final:
            raise ValueError(f"{only_final}; the model asked for {step.tool}")
        raise ValueError(f"{step.tool!r} is not one of this agent's tools")
    return step


CUT_MARK = " [… cut off: the reply reached its token limit]"  # no figure: grounded numbers check answers
_FINAL_OPENS = re.compile(r'\s*\{\s*"final"\s*:\s*"')
_LONGEST_ESCAPE = 6  # \uXXXX: a cut may leave up to 5 of its characters


def closed_final(text: str) -> str | None:
    """A final answer that its token cap cut inside its text, closed as a step: the words
    it had, then CUT_MARK. None when `text` is anything else (a cut tool call is not
    guessed at). Measured: SmolLM2 looped inside a final answer until the cap, twice, and
    the task failed on output that "did not parse"; a larger model's long answer (a list
    of processes) is cut the same way and is worth keeping."""
    opened = _FINAL_OPENS.match(text)
    if opened is None:
        return None
    body = text[opened.end():]
    for trim in range(_LONGEST_ESCAPE):  # a cut escape (a lone backslash, half a \uXXXX) is dropped
        try:
            words = json.loads(f'"{body[:len(body) - trim]}"')
        except ValueError:
            continue
        return msgspec.json.encode({"final": words.rstrip() + CUT_MARK}).decode()
    return None  # the text closed and went on: not cut inside it


def decode(text: str, kind: type[msgspec.Struct]) -> Any:
    """Strict decoding of a phase's JSON; raises ValueError."""
    try:
        return msgspec.json.decode(text, type=kind, strict=True)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ValueError(str(err)) from None
