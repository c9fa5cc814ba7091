"""Grounding: an answer rests on what the tools in this task showed, and a claimed change
is one that was made. Plain functions of the task, the agent's tools and what this task's
tool calls returned; the runner applies them, each behind its harness lever.

A small model answers at step 1 with confidence and no look (measured: Qwen-1.5B called a
tool once across a handful of workstation tasks and made the rest up), claims edits it
never made, adds numbers wrongly after reading them right and hands work back to the agent
that gave it. Each check here turns one of those into a refusal fed back to the model
while steps remain, or a failed task when none do — never a confident wrong `done`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.protocol import Task
from agents.tools.diffs import ChangedLine

MACHINE = re.compile(r"\b(disk|memory|ram|cpu|cores?|load|health|process(es)?|gpu|swap|uptime|been up|"
                     r"this machine)\b", re.I)
WORKSPACE = re.compile(r"\b[\w.-]+\.[a-z0-9]{1,6}\b|"
                       r"\b(files?|folders?|director(y|ies)|workspace|diff|lines?)\b", re.I)
# Past work: what happened, what an agent did, what was learnt (tasks, the log, memory).
EARLIER = re.compile(r"\b(what (happened|has happened|went)|did|history|journal|earlier|previous(ly)?|"
                     r"last time|remember|learn(ed|t)?|task\s*#?\d+|which agent)\b", re.I)
ASKS = re.compile(r"^\s*(what|which|who|whom|whose|how|when|where|why|is|are|was|were|does|do|did|has|have)\b"
                  r"|\?\s*$", re.I)
ASKS_TO_BE_TOLD = re.compile(r"^\s*(tell me|find out|list|show|count|report|check)\b", re.I)
REQUEST_AS_QUESTION = re.compile(r"^\s*((can|could|would|will) you|please)\b", re.I)
CHANGE_REQUEST = re.compile(r"\b(create|write|save|edit|change|set|append|add|remove|delete|fix|replace|"
                            r"rename|update)\b", re.I)
ONLY_DELEGATING = re.compile(r"\b(will|i'll|shall|going to|let me|need to|should)\s+"
                             r"(delegate|ask|hand|pass|forward)|\bdelegat(e|ing) (this|it|the task)\b", re.I)
FIGURES = re.compile(r"\bhow (many|much|full|long|big|large)\b|\b(sum|total|count|percent(age)?|average|"
                     r"size|number of|in (gib|mib|gb|mb|hours|percent))\b|%", re.I)
COMPUTED = re.compile(r"\b(sum|total|average|mean|how many)\b", re.I)
# Tools whose results are raw content: a figure there is not a computed one.
RAW_CONTENT_TOOLS = {"read_file", "search_files", "task"}
# A number as a person writes it: not part of a word (notes2.txt) or a version (v1.2).
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")

# How an answer points at a line: "line 4", "l. 4", "inventory.py:4"; or quotes its code.
LINE_REF = re.compile(r"(?:\bline\s*|\bl\.\s*|:)(\d+)\b", re.I)
CODE_QUOTE = re.compile(r"`([^`\n]{3,})`")
SPEAKS_OF_REMOVAL = re.compile(r"\b(remov(ed|es|ing)|delet(ed|es|ing)|dropp(ed|s|ing)|missing|no longer|"
                               r"took out|taken out)\b", re.I)
TELL = re.compile(r"\b(tell|message|notify|inform|post|announce|ask|let\s+\w+\s+know|channel|#\w+|"
                  r"lead|dev|review|ops|scribe|team)\b", re.I)
MESSAGE_TOOLS = ("send_message", "post_channel")
GENERIC_TOOLS = {"run_shell"}  # can do nearly anything, so made for nothing in particular
# Figures a calculation may use that no tool showed: a header line less, a half, percent, units.
CONSTANTS = {0.0, 1.0, 2.0, 100.0, 1000.0, 1024.0}
ADD = re.compile(r"\b(append|add|adds|adding|log|record|at the end|end of)\b", re.I)
NO_LINE = "no line named"  # what off_the_change says of a finding that names none
WHICH_LINE = re.compile(r"\b(which|what) lines?\b|\bwhere\b", re.I)
NO_FINDING = re.compile(r"\bno (bugs?|problems?|issues?|findings?)\b|\bnothing (wrong|found)\b", re.I)
# A clock time (15:52:03) or a date (2026-12-03), whose parts are not figures.
CLOCK = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\b|\b\d{4}-\d{2}-\d{2}(?:[T ]\S*)?")
NAMED_FILE = re.compile(r"\b[\w.-]+\.[a-z0-9]{1,6}\b", re.I)
LISTING = re.compile(r"\b(files?|folders?|director(y|ies)|workspace)\b", re.I)
MACHINE_TOOLS = {"system_health", "list_processes", "run_shell"}
FILE_TOOLS = {"read_file", "list_dir", "search_files", "run_shell"}
LISTING_TOOLS = {"list_dir", "search_files", "run_shell", "read_file"}
EARLIER_TOOLS = {"read_log", "read_tasks", "memory_search", "read_messages"}
WRITE_TOOLS = ("write_file", "edit_file", "append_file")
# Not offered for a question either. Measured: asked which agent rotated the logs, and what
# was learnt about the date tests, Qwen-1.5B saved what read_tasks and memory_search showed
# with memory_write and answered that it had written a reflection (both rounds, both tasks);
# what a task teaches is kept by the reflect phase anyway.
RECORD_TOOLS = ("memory_write",)


def is_question(task: Task) -> bool:
    """A question asks to be told, not for a change: "Which port is set?" is one; "Can
    you fix the typo?" and "Find out X and save it in a file" are requests."""
    title = task.title
    if REQUEST_AS_QUESTION.search(title):
        return False
    if ASKS.search(title):
        return True
    return bool(ASKS_TO_BE_TOLD.search(title)) and not CHANGE_REQUEST.search(f"{title} {task.body}")


def _aspects(task: Task) -> dict[str, set[str]]:
    """What the task is about (the machine, the workspace, earlier work, a file to
    change), each with the tools that can show or do it."""
    text = f"{task.title} {task.body}"
    found: dict[str, set[str]] = {}
    if MACHINE.search(text):
        found["machine"] = MACHINE_TOOLS
    if NAMED_FILE.search(text):
        found["a file"] = FILE_TOOLS
    if LISTING.search(text):  # reading one file cannot count or rank the workspace's files
        found["the workspace"] = LISTING_TOOLS
    if EARLIER.search(text):
        found["earlier"] = EARLIER_TOOLS
    if CHANGE_REQUEST.search(text) and WORKSPACE.search(text) and not is_question(task):  # a file to change
        found["change"] = set(WRITE_TOOLS)
    return found


def needs_a_look(task: Task) -> bool:
    """The task is about the machine, the workspace's files or earlier work, beyond the
    files it names: what it writes must come from a look."""
    return bool(set(_aspects(task)) - {"a file", "change"})


def evidence_tools(task: Task, tools: Collection[str]) -> set[str]:
    """The agent's tools that can show what this task is about (the machine, the
    workspace, earlier work); empty: the task needs no evidence from this agent. An agent
    that can delegate rests on a delegation for what its own tools cannot show."""
    found: set[str] = set()
    for needed in _aspects(task).values():
        found |= needed & set(tools)
    if uncovered(task, tools) and "delegate" in tools:
        found.add("delegate")
    return found


def uncovered(task: Task, tools: Collection[str]) -> dict[str, set[str]]:
    """The parts of the task the agent's own tools cannot do, each with the tools that can
    (read_file shows a file it is told of, but alone cannot count or rank the workspace's)."""
    return {aspect: needed for aspect, needed in _aspects(task).items()
            if not needed & set(tools) - ({"read_file"} if aspect == "the workspace" else set())}


def change_out_of_reach(task: Task, tools: Collection[str]) -> bool:
    """The task asks for a change to a file that none of `tools` makes, and they cannot
    delegate it either (lead's own check hands such a part on)."""
    return "change" in uncovered(task, tools) and "delegate" not in tools


def first_look(task: Task, tools: Collection[str]) -> set[str]:
    """What step 1 may call when the task needs evidence: the evidence tools, or only the
    delegate tool when part of the task is beyond the agent's own tools. Measured: lead,
    asked for a file count and the CPU cores, read a made-up "workspace.txt" eight times."""
    found = evidence_tools(task, tools)
    if "delegate" in found:
        return {"delegate"}
    return found


def asks_for_computed_figure(task: Task) -> bool:
    """A sum, a count, an average: a figure no file states, which a tool must compute (the
    model adds and counts wrongly: 17+25+8 answered as 17, measured)."""
    return bool(COMPUTED.search(f"{task.title} {task.body}"))


def asks_for_figures(task: Task) -> bool:
    """A task whose answer is a figure (how many, how full, a sum): the figures in its
    answer must come from a tool. Elsewhere a number may be a line the model points at."""
    return bool(FIGURES.search(f"{task.title} {task.body}"))


NUMBER_WORDS = re.compile(r"\b(no|none|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|"
                          r"twelve)\b", re.I)


def gives_a_figure(answer: str) -> bool:
    """The answer states a figure: a number, or one in words ("none", "three")."""
    return bool(NUMBER.search(answer) or NUMBER_WORDS.search(answer))


def numbers_in(text: str) -> list[float]:
    return [float(n.replace(",", ".")) for n in NUMBER.findall(text)]


def figures_in(text: str) -> list[float]:
    """The numbers a tool result shows as figures: not the parts of a clock time or a
    date (measured: "15 files" was grounded by the log's 15:52:03)."""
    return numbers_in(CLOCK.sub(" ", text))


def _matches(said: float, seen: float) -> bool:
    """`said` is `seen`, or `seen` rounded as a person would (43.4 → 43, 12.34 → 12.3)."""
    if math.isclose(said, seen, rel_tol=1e-9, abs_tol=1e-9):
        return True
    return any(math.isclose(said, round(seen, digits), abs_tol=1e-9) for digits in (0, 1, 2))


def ungrounded_numbers(answer: str, evidence: Iterable[str]) -> list[str]:
    """The numbers in `answer` that appear (as written, or rounded) in none of the
    evidence texts: the tool results of this task and the task's own words."""
    seen = [n for text in evidence for n in figures_in(text)]
    return [raw for raw in NUMBER.findall(answer)
            if not any(_matches(float(raw.replace(",", ".")), s) for s in seen)]


# A question for the count of a whole ("how many CPU cores does this machine have", "how
# many files are in the workspace"); not one with a condition ("how many files are larger
# than 1 KB"), whose count a tool's total does not give.
WHOLE_COUNT = re.compile(r"\bhow many\s+(?:[\w-]+\s+){0,2}?(?P<a>[a-z]+s)\s+(?:does|do|did)\s+"
                         r"(?:[\w.-]+\s+){0,3}?(?:have|has|hold|holds|contain|contains)\b|"
                         r"\bhow many\s+(?:[\w-]+\s+){0,2}?(?P<b>[a-z]+s)\s+(?:are|were)\s+(?:there|in)\b",
                         re.I)


def _counts_of(noun: str, text: str) -> set[float]:
    """The numbers `text` puts right before `noun` ("2 cores", "3 files", "of 2 CPU cores")."""
    stem = re.escape(noun[:-1])
    return {float(n.replace(",", ".")) for n in
            re.findall(rf"(?<![\w.])(\d+(?:[.,]\d+)?)\s+(?:[\w-]+\s+)?{stem}s?\b", text, re.I)}


def count_off_its_subject(question: str, answer: str, results: Iterable[str]) -> str:
    """A count the answer gives for what the question counts, when the tool results count
    it too and none of theirs is the answer's: what the results say ('' when in line, or
    when they do not count it). Measured: asked how many CPU cores, with "cpu: 13% of 2
    cores; load 2.24, ..." before it, Qwen-1.5B answered 5 in both rounds; a 5 rounded
    from a load average let it through the figure check."""
    found = WHOLE_COUNT.search(question)
    if found is None:
        return ""
    noun = (found.group("a") or found.group("b")).lower()
    seen = set().union(*(_counts_of(noun, text) for text in results))
    said = _counts_of(noun, answer) or set(numbers_in(answer))
    if not seen or not said or said & seen:
        return ""
    def listed(numbers: set[float]) -> str:
        return ", ".join(f"{n:g}" for n in sorted(numbers))
    return f"the tool results count {noun}: {listed(seen)}, and the answer says {listed(said)}"


def off_the_change(answer: str, changes: Sequence[ChangedLine], *, must_point: bool = False) -> str:
    """What a finding about a diff points at when none of it is a line the diff adds:
    '' when it names an added line (by number or by quoting its code), speaks of what the
    change removed (a dropped guard is a finding), or names no line at all and need not
    (must_point: the task asks which line; "no line named" is then the problem)."""
    added = [c for c in changes if c.added]
    lines = {int(n) for n in LINE_REF.findall(answer)}
    quotes = [q.strip() for q in CODE_QUOTE.findall(answer) if q.strip()]
    if not added or SPEAKS_OF_REMOVAL.search(answer):
        return ""
    if not (lines or quotes):
        return NO_LINE if must_point and not NO_FINDING.search(answer) else ""
    if lines & {c.line for c in added}:
        return ""
    code = [c.text.strip() for c in added if len(c.text.strip()) >= 4]
    if any(q in c or c in q for q in quotes for c in code):
        return ""
    return ", ".join(([f"line {n}" for n in sorted(lines)] + [f"`{q}`" for q in quotes])[:3])


def asks_for_change(task: Task) -> bool:
    """The task asks for a file in the workspace to be created or changed."""
    return "change" in _aspects(task)


def fitting(can: set[str], toolsets: Iterable[Collection[str]]) -> set[str]:
    """Of the tools that `can` do a part, those made for it: without run_shell, unless no
    one has another of them."""
    made_for = can - GENERIC_TOOLS
    return made_for if any(made_for & set(tools) for tools in toolsets) else can


def asks_which_line(task: Task) -> bool:
    return bool(WHICH_LINE.search(f"{task.title} {task.body}"))


def asks_to_add(task: Task) -> bool:
    """The task asks for something added to a file (a line appended, an entry added)."""
    return bool(ADD.search(f"{task.title} {task.body}"))


def asks_to_tell(task: Task) -> bool:
    """The task asks for a message or a post (to an agent, a channel, the team)."""
    return bool(TELL.search(f"{task.title} {task.body}"))


def only_delegates(answer: str) -> bool:
    """An answer that says the work will be handed on, instead of the work."""
    return bool(ONLY_DELEGATING.search(answer))


@dataclass
class Evidence:
    """What this task's tool calls showed and changed, for the checks above."""
    # (tool, text) of every ok result, and ("task", its words)
    shown: list[tuple[str, str]] = field(default_factory=list)
    ok_calls: int = 0
    read: set[Path] = field(default_factory=set)  # files read whole in this task
    changed: list[str] = field(default_factory=list)  # files changed and verified
    delegated: list[str] = field(default_factory=list)  # the agents given subtasks
    diff_changes: list[ChangedLine] = field(default_factory=list)  # of the diffs read
    writes: set[str] = field(default_factory=set)  # each verified write call, as JSON

    def record(self, tool: str, status: str, text: str) -> None:
        if status == "ok":
            self.ok_calls += 1
            self.shown.append((tool, text))

    def texts(self, *, computed: bool = False) -> list[str]:
        """What may ground a figure; computed: only what a tool computed or measured,
        not the raw content of a file (nor the task's own words)."""
        return [text for tool, text in self.shown if not (computed and tool in RAW_CONTENT_TOOLS)]


def verify_change(workspace: Path, tool: str, path: str, content: str) -> str:
    """Reads the file back after a write or edit the tool reported done: '' when the
    file holds what was written (the whole content; the edit's new text), else why not."""
    target = workspace / path
    try:
        now = target.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return f"{path} cannot be read back ({err.strerror or err})"
    if tool == "write_file" and now != content:
        return f"{path} does not hold what was written ({len(now)} characters, not {len(content)})"
    if tool == "edit_file" and content and content not in now:
        return f"{path} does not contain the new text"
    if tool == "append_file" and not now.rstrip("\n").endswith(content.rstrip("\n")):
        return f"{path} does not end with the appended text"
    return ""


EDIT_LINES_MAX = 200  # lines of a file offered as edit_file's `old`; past it `old` stays free
EDIT_LINE_CHARS = 400  # longer lines are left out of the choice


QUOTED = re.compile(r"""(?<![\w'])'([^'\n]{2,300})'(?![\w'])|"([^"\n]{2,300})"|`([^`\n]{2,300})`""")


def quoted(task: Task) -> list[str]:
    """The texts the task quotes ('- fixed the login bug', "x", `x`), once each, in order."""
    return list(dict.fromkeys(next(g for g in m.groups() if g is not None)
                              for m in QUOTED.finditer(f"{task.title} {task.body}")))


def change_choices(named: dict[str, Path], read: Collection[Path], tools: Collection[str],
                   quotes: Sequence[str] = (), *, may_create: bool = True) -> dict[str, dict]:
    """The change tools a change task's next step is narrowed to, by the files it names
    (as written → real path): once every existing one was read, edit_choices for those,
    and write_file with `path` one of the names still to create (measured: asked to create
    todo.md, or to save a figure in disk.txt, the 0.5B edited the prompt's example
    todo.txt). Empty when a named file exists unread (read it first), a name is a
    folder, or only files to create are named and `may_create` is off (look first).
    Looks at the disk: call it off the event loop."""
    existing: dict[str, Path] = {}
    new: list[str] = []
    for name, path in named.items():
        if path.is_file():
            if path not in read:
                return {}
            existing[name] = path
        elif path.exists():
            return {}
        else:
            new.append(name)
    if not existing and not (new and may_create):
        return {}
    choices = edit_choices(existing, tools, quotes) if existing else {}
    if new and may_create and "write_file" in tools:
        props = {"path": {"enum": new}, "content": {"type": "string"}}
        choices["write_file"] = {"type": "object", "properties": props, "required": list(props),
                                 "additionalProperties": False}
    return choices


def edit_choices(files: dict[str, Path], tools: Collection[str],
                 quotes: Sequence[str] = ()) -> dict[str, dict]:
    """The arguments' schemas of the tools that change `files` (names as the task wrote
    them, each read in this task), narrowed to them: `path` one of the names, and
    edit_file's `old` one of their lines that occurs once (whole lines: measured, the
    0.5B copied the prompt's example `old` and path instead of the file it had just read);
    append_file's `text` one of `quotes`, the texts the task quotes, when there are any
    (measured: asked to append '- fixed the login bug', the 0.5B appended it and a line
    of its own). Empty when no such tool is offered. Reads the files: call it off the
    event loop."""
    names = sorted(files)
    lines: list[str] = []
    for path in files.values():
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        split = text.splitlines()
        lines += [line for line in dict.fromkeys(split) if line.strip() and len(line) <= EDIT_LINE_CHARS
                  and text.count(line) == 1]
    lines = list(dict.fromkeys(lines))
    old: dict = {"enum": lines} if 0 < len(lines) <= EDIT_LINES_MAX else {"type": "string"}
    text_field = {"type": "string"}
    shapes = {
        "edit_file": {"path": {"enum": names}, "old": old, "new": text_field},
        "append_file": {"path": {"enum": names}, "text": {"enum": list(quotes)} if quotes else text_field},
    }
    return {tool: {"type": "object", "properties": props, "required": list(props),
                   "additionalProperties": False}
            for tool, props in shapes.items() if tool in tools}

