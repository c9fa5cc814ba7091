"""Rules first: cheap checks that answer before any model call (a small model is slow and
sometimes wrong where a regular expression is neither). Plain functions of the task and
the agent's tools; the runner applies them when `harness.rules_first` is on.

- Triage: a scheduled health check with nothing abnormal needs no model (psutil against
  HEALTH_LIMITS); a subtask delegated to the agent is acted on; an agent that watches the
  machine acts on questions about it; one that reads the log acts on what happened.
- First step: a question about which process does something starts with the process
  list; one about the workspace's files, with its listing; one about the machine, with
  a look at it; one about what was learnt, with a
  memory search; one about what happened, with the log (of the task it names, if it
  names one); any other question to an agent whose only view is the crew's records
  (no machine or file tools), with the task list and how each task ended.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import psutil

from agents.crew.schemas import ToolStep, Triage
from agents.protocol import Task

WHAT_HAPPENED = re.compile(r"\bwhat (happened|did|has happened|went)\b|\bhistory\b|\bjournal\b", re.I)
TASK_REFERENCE = re.compile(r"\btask\s*#?(\d{1,9})\b|#(\d{1,9})\b", re.I)
MACHINE_WORDS = re.compile(r"\b(disk|memory|ram|cpu|load|health|process|processes|gpu|swap)\b", re.I)
# "Which process uses the most memory?": a ranking the process list answers.
# The files as a whole ("how many files", "which file in the workspace"), not one file.
ABOUT_THE_FILES = re.compile(r"\b(which|how many|what|largest|biggest|smallest|newest|list)\b.*"
                             r"\b(files|folders|directories|workspace)\b", re.I)
LEARNT = re.compile(r"\b(learn(ed|t)?|lessons?|remember(ed)?)\b", re.I)
# An agent with any of these sees the world; without them it sees only the crew's records.
WORLD_TOOLS = {"system_health", "list_processes", "read_file", "list_dir", "search_files", "run_shell"}
WHICH_PROCESS = re.compile(r"\b(which|what|top)\b.*\bprocess(es)?\b.*\b(memory|ram|cpu)\b", re.I)
FILE_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.[A-Za-z0-9]{1,8})\b")  # a.txt, sub/a.txt
HEALTH_LIMITS = {"cpu": 90.0, "memory": 90.0, "disk": 90.0}  # percent; above: abnormal
HEALTH_CHECK = "[health]"  # how a scheduled health check's title starts


def health_is_normal() -> tuple[bool, str]:
    """psutil against HEALTH_LIMITS: whether all is normal, and the figures as text.
    Blocks for 0.2 s (the CPU is measured over an interval): call it off the event loop."""
    figures = {"cpu": psutil.cpu_percent(interval=0.2), "memory": psutil.virtual_memory().percent,
               "disk": psutil.disk_usage("/").percent}
    text = ", ".join(f"{k} {v:.0f}%" for k, v in figures.items())
    return all(figures[k] < HEALTH_LIMITS[k] for k in figures), text


def is_health_check(task: Task, tools: Collection[str]) -> bool:
    """A scheduled health check, for an agent that can look at the machine."""
    return task.title.startswith(HEALTH_CHECK) and "system_health" in tools


def health_triage(normal: bool, figures: str) -> Triage:
    """A health check's triage from health_is_normal's answer: nothing to do when all is well."""
    if normal:
        return Triage(action="ignore", reason=f"health check: all normal ({figures})")
    return Triage(action="act", reason=f"health check: something is abnormal ({figures})")


def triage_rule(task: Task, tools: Collection[str]) -> Triage | None:
    """The triage the rules give a task that is not a health check; None: ask the model."""
    text = f"{task.title} {task.body}"
    if task.parent_id is not None and task.created_by != "owner":
        return Triage(action="act", reason="a subtask delegated to me")
    if "system_health" in tools and MACHINE_WORDS.search(text):
        return Triage(action="act", reason="a question about this machine, which I watch")
    if "read_log" in tools and WHAT_HAPPENED.search(text):
        return Triage(action="act", reason="a question about what happened, which the log answers")
    return None


STATUS_WORDS = {"failed": re.compile(r"\b(fail(ed|s)?|broke|went wrong)\b", re.I),
                "done": re.compile(r"\b(completed?|succeeded|successful(ly)?|finished)\b", re.I)}


def named_files(task: Task) -> list[str]:
    """Every file name the task's words name (`settings.ini`, `sub/a.txt`), once each, in order."""
    return list(dict.fromkeys(FILE_NAME.findall(f"{task.title} {task.body}")))


def named_file(task: Task, workspace: Path) -> str | None:
    """The first file the task names (`settings.ini`, `change.diff`) that exists in the
    workspace, as written; None when it names none."""
    for name in FILE_NAME.findall(f"{task.title} {task.body}"):
        candidate = (workspace / name).resolve()
        if candidate.is_relative_to(workspace.resolve()) and candidate.is_file():
            return name
    return None


def first_step(task: Task, tools: Collection[str], workspace: Path | None = None) -> ToolStep | None:
    """The act phase's first step when the rules know it; None: ask the model."""
    text = f"{task.title} {task.body}"
    if workspace is not None and "read_file" in tools:
        # Measured: asked to review change.diff, Qwen-1.5B searched for the word "bug" and
        # answered with "no matches"; asked to sum a file, it answered without reading it.
        name = named_file(task, workspace)
        if name is not None:
            return ToolStep(tool="read_file", arguments={"path": name})
    if "list_dir" in tools and ABOUT_THE_FILES.search(text):
        # Measured: asked which file is the largest, Qwen-1.5B searched for "^$" and
        # answered that there were no files.
        return ToolStep(tool="list_dir", arguments={"path": "."})
    if "list_processes" in tools and WHICH_PROCESS.search(text):
        # Measured: given the health figures first, Qwen-1.5B said the top process "is not specified".
        by = "memory" if re.search(r"\b(memory|ram)\b", text, re.I) else "cpu"
        return ToolStep(tool="list_processes", arguments={"sort": by})
    if "system_health" in tools and MACHINE_WORDS.search(text):
        return ToolStep(tool="system_health", arguments={})
    if "memory_search" in tools and LEARNT.search(text):
        # Measured: asked what was learnt, Qwen-1.5B read the log and named a task title.
        return ToolStep(tool="memory_search", arguments={"query": task.title})
    if "read_log" in tools and WHAT_HAPPENED.search(text):
        ref = TASK_REFERENCE.search(text)
        named = int(ref.group(1) or ref.group(2)) if ref else None
        return ToolStep(tool="read_log", arguments={"task": named} if named else {"last": 40})
    if "read_tasks" in tools and "delegate" not in tools and not WORLD_TOOLS & set(tools):
        # Measured: Qwen-1.5B read 20 log lines and took the count of photos backed up
        # from a clock time; the task list says who did what and how it ended, counted.
        # Measured: given the whole list, the 0.5B answered with its last line (a count, or
        # an unrelated task): the tasks of the status the question names, or those sharing
        # its words, when any does.
        status = next((s for s, words in STATUS_WORDS.items() if words.search(text)), None)
        return ToolStep(tool="read_tasks",
                        arguments={"status": status} if status else {"matching": task.title})
    return None
