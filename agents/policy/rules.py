"""Permission rules: who (an agent or `*`), which tool, a pattern, allow|ask|deny.

Patterns by tool:
- run_shell: a token prefix of the command (`git status` matches `git status --short`);
  `*` matches any command.
- file tools: a glob on the path relative to the workspace (`src/*`, `*.md`), or on the
  absolute path when the pattern starts with `/`; `*` matches any path.
- other tools: `*`, or a glob on what the call resolves to (a recipient, a channel).
"""

from __future__ import annotations

import fnmatch
import shlex

import msgspec

from agents.policy.paths import ResolvedPath
from agents.policy.shell_parse import ParsedCommand

PATH_TOOLS = frozenset({"read_file", "write_file", "edit_file", "append_file", "list_dir", "search_files"})


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    id: int | None  # None: from the config file
    agent: str  # an agent's name, or "*"
    tool: str
    pattern: str
    decision: str  # allow, ask, deny
    source: str  # config, user, approval

    def describe(self) -> str:
        where = f"rule {self.id}" if self.id is not None else "config rule"
        return f"{where}: {self.agent} {self.tool} {self.pattern!r} {self.decision} ({self.source})"


def pattern_tokens(pattern: str) -> list[str]:
    try:
        return shlex.split(pattern)
    except ValueError:
        return pattern.split()


def command_matches(pattern: str, argv: list[str], *, by_basename: bool = False) -> bool:
    """`pattern`'s tokens are a prefix of `argv`. With `by_basename` (deny and ask rules)
    `sudo` also matches `/usr/bin/sudo`; an allow rule for `git` never matches `./git`."""
    if pattern.strip() == "*":
        return True
    tokens = pattern_tokens(pattern)
    if not tokens or len(argv) < len(tokens):
        return False
    first = argv[0].rsplit("/", 1)[-1] if by_basename and "/" not in tokens[0] else argv[0]
    return first == tokens[0] and argv[1: len(tokens)] == tokens[1:]


def path_matches(pattern: str, where: ResolvedPath) -> bool:
    if pattern.strip() == "*":
        return True
    if pattern.startswith("/"):
        return fnmatch.fnmatchcase(where.real, pattern)
    return where.relative is not None and fnmatch.fnmatchcase(where.relative, pattern)


def applies(rule: Rule, agent: str, tool: str) -> bool:
    """The rule's agent and tool match: `mcp.SERVER.*` covers every tool of that server."""
    if rule.agent not in (agent, "*"):
        return False
    if rule.tool.startswith("mcp.") and rule.tool.endswith(".*"):
        return tool.startswith(rule.tool[:-1]) and "." not in tool[len(rule.tool) - 1:]
    return rule.tool == tool


def shell_rule_matches(rule: Rule, parsed: ParsedCommand, *, for_deny: bool) -> bool:
    """A deny (or ask) rule matches any command found anywhere in the tree; an allow rule
    only the one plain command."""
    if for_deny:
        return any(command_matches(rule.pattern, argv, by_basename=True) for argv in parsed.commands)
    return parsed.plain and parsed.argv is not None and command_matches(rule.pattern, parsed.argv)


def always_pattern(tool: str, target: ResolvedPath | ParsedCommand | str) -> str | None:
    """The rule an `always` answer saves: exactly what was approved, nothing wider.
    None where no allow rule could ever apply (a command that is not plain)."""
    if isinstance(target, ParsedCommand):
        return shlex.join(target.argv) if target.plain and target.argv else None
    if isinstance(target, ResolvedPath):
        return target.relative
    return target or "*"
