"""The levers that make a small model useful, each switchable so that
`agentdeck bench crew --suite --ablate` can measure what each is worth.

The grounding levers (agents/crew/grounding.py) are on by default: each turns one way a
small model is confidently wrong into a refusal it is told about, or a failed task."""

from __future__ import annotations

import msgspec


class Harness(msgspec.Struct, frozen=True, kw_only=True):
    grammar: bool = True  # every model call constrained by a grammar from its schema
    rules_first: bool = True  # rule-based triage and first steps before any model call
    examples: bool = True  # one concrete example call per tool in the system prompt
    result_chars: int = 1200  # of a tool result fed back to the model (compact)
    # A reply its token cap cut: a final answer kept as far as it went, anything else retried
    # with the model told it was cut.
    cut_replies: bool = True
    # grounding
    evidence: bool = True  # no final answer before a tool showed something, when one can
    grounded_numbers: bool = True  # every figure in an answer appears in a tool result
    verify_changes: bool = True  # a write is read back; a claimed change must have been made
    no_hand_back: bool = True  # never to the agent that gave the task; "I will delegate" is no answer
    keep_own: bool = True  # a task the person gave an agent whose tools can do it is acted on
    route_changes: bool = True  # a file change the agent's tools cannot make goes to an agent's that can
    read_before_write: bool = True  # an existing file is changed only after it was read here
    questions_read_only: bool = True  # a question is answered without write tools (nor memory_write)
    combine_verified: bool = True  # a parent waits for its subtasks and states only their results
    calculator: bool = True  # the calculate tool is offered to the agents configured with it
    on_the_change: bool = True  # a finding about a diff read in this task points at a line it adds
    act_after_refusal: bool = True  # after a refused answer the next step is a tool call
    fitting_tools: bool = True  # messaging only when asked to tell, append_file only when asked to add
    writes_wait: bool = True  # a subtask that changes a file waits for its siblings' results
    edit_targets: bool = True  # once the files to change are read: change them, `old` one of their lines


DEFAULT = Harness()

# What `--ablate` turns off, one at a time, against the default.
ABLATIONS: dict[str, Harness] = {
    "no grammar": Harness(grammar=False),
    "no rules first": Harness(rules_first=False),
    "no tool examples": Harness(examples=False),
    "whole results": Harness(result_chars=16_000),
    "cut replies retried blind": Harness(cut_replies=False),
    "no evidence rule": Harness(evidence=False),
    "no grounded numbers": Harness(grounded_numbers=False),
    "no change verification": Harness(verify_changes=False),
    "hand-back allowed": Harness(no_hand_back=False),
    "triage may re-route": Harness(keep_own=False),
    "changes stay put": Harness(route_changes=False),
    "write without reading": Harness(read_before_write=False),
    "questions may write": Harness(questions_read_only=False),
    "combine unchecked": Harness(combine_verified=False),
    "no calculator": Harness(calculator=False),
    "findings off the change": Harness(on_the_change=False),
    "refused answer repeated": Harness(act_after_refusal=False),
    "every tool offered": Harness(fitting_tools=False),
    "writes run ahead": Harness(writes_wait=False),
    "edits unguided": Harness(edit_targets=False),
    # Everything grounding adds, off at once: the harness as it was before it.
    "no grounding": Harness(evidence=False, grounded_numbers=False, verify_changes=False,
                            no_hand_back=False, keep_own=False, route_changes=False,
                            read_before_write=False, questions_read_only=False,
                            combine_verified=False, calculator=False,
                            on_the_change=False, act_after_refusal=False, fitting_tools=False,
                            writes_wait=False, edit_targets=False),
}
# `--ablate grounding` runs only these against the default (a full ablation is the default and 21 more).
GROUNDING = ("no grounding", "no evidence rule", "no grounded numbers", "no change verification",
             "hand-back allowed", "triage may re-route", "changes stay put", "write without reading",
             "questions may write", "combine unchecked", "no calculator", "findings off the change",
             "refused answer repeated", "every tool offered", "writes run ahead", "edits unguided")


def levers_off(harness: Harness) -> frozenset[str]:
    """The levers (field names) `harness` sets apart from the default: what an ablation
    turns off, to be matched against the levers that acted in a task (TaskRunner.acted)."""
    return frozenset(name for name in harness.__struct_fields__
                     if getattr(harness, name) != getattr(DEFAULT, name))
