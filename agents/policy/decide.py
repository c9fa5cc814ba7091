"""decide(agent, tool, arguments) -> allow | ask | deny, with the rule or reason and what
the call resolves to. Pure: it reads rules and the filesystem's links, runs nothing.

Order: a tool outside the agent's allowlist is denied; a path outside the workspace or in
agentdeck's home is denied; then deny > ask > allow over the rules; anything unmatched
asks. Some calls ask whatever an allow rule says: a shell command that is not plain, one
with an option that writes or executes, an interpreter (`python3`, `bash`, `node`, ...)
unless it runs a workspace file inside bubblewrap, any shell command while no sandbox is
available (fail closed), and writes under `.git/`. `resolved` is computed here from the arguments,
never taken from the model.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from agents.errors import InvalidArgument
from agents.policy.options import interpreter_script, risky_option
from agents.policy.paths import ResolvedPath, resolve_path
from agents.policy.rules import (
    PATH_TOOLS,
    Rule,
    always_pattern,
    applies,
    path_matches,
    shell_rule_matches,
)
from agents.policy.shell_parse import ParsedCommand, parse_command
from agents.tools import TOOLS
from agents.tools.base import Tool, ToolError

Verdict = Literal["allow", "ask", "deny"]


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    decision: Verdict
    rule: str | None  # the rule that decided, described
    reason: str
    resolved: str  # the absolute real path, or the parsed command
    always_rule: str | None  # the pattern an `always` answer would save (None: not offered)


@dataclass(frozen=True)
class Policy:
    workspace: Path
    home: Path
    allowlists: Mapping[str, list[str]]  # agent -> its tools
    rules: tuple[Rule, ...]
    shell_sandboxed: bool  # False: no allow rule applies to run_shell
    # bubblewrap really runs the commands (not sandbox = "off"): only then may an allow
    # rule match an interpreter running a workspace file.
    bwrap: bool = False
    # Tools beyond the built-in ones, per agent: the MCP servers' (`mcp.SERVER.TOOL`) scoped
    # to it and offered now (pinned and approved).
    extra_tools: Mapping[str, Mapping[str, Tool]] = field(default_factory=dict)


def _target(tool: str, args: msgspec.Struct, policy: Policy) -> ResolvedPath | ParsedCommand | str:
    if tool in PATH_TOOLS:
        return resolve_path(args.path, policy.workspace, policy.home)  # type: ignore[attr-defined]
    if tool == "run_shell":
        return parse_command(args.command)  # type: ignore[attr-defined]
    if tool in ("send_message", "delegate"):
        return args.to  # type: ignore[attr-defined]
    if tool == "post_channel":
        return "#" + args.channel.lstrip("#")  # type: ignore[attr-defined]
    return ""


def _matches(rule: Rule, target: ResolvedPath | ParsedCommand | str, *, for_deny: bool) -> bool:
    if isinstance(target, ParsedCommand):
        return shell_rule_matches(rule, target, for_deny=for_deny)
    if isinstance(target, ResolvedPath):
        return path_matches(rule.pattern, target)
    return rule.pattern.strip() == "*" or fnmatch.fnmatchcase(target, rule.pattern)


def _forced_ask(tool: str, target: ResolvedPath | ParsedCommand | str, policy: Policy) -> str | None:
    """Why this call must ask even when an allow rule matches."""
    if isinstance(target, ParsedCommand):
        if not target.plain:
            return f"not a plain command ({', '.join(target.constructs)})"
        risky = risky_option(target.argv or [])
        if risky and not _workspace_script(target, policy):
            if interpreter_script(target.argv or []) is not None:
                return (f"{risky}; only a workspace file run inside the sandbox (bubblewrap) "
                        "may be allowed")
            return f"{risky}: an option that writes files, runs programs or reads outside"
        if not policy.shell_sandboxed:
            return "no sandbox (bubblewrap) is available, so every command asks"
    if isinstance(target, ResolvedPath) and target.in_git and TOOLS[tool].effect == "write":
        return "writes under .git/ always ask: hooks and config there run code"
    return None


def _workspace_script(target: ParsedCommand, policy: Policy) -> bool:
    """`python3 tools/x.py ...` run in bubblewrap, the script a file in the workspace: no
    more than `make test` running workspace code, so an allow rule may match it."""
    script = interpreter_script(target.argv or [])
    if script is None or not policy.bwrap:
        return False
    where = resolve_path(script, policy.workspace, policy.home)
    return where.problem is None and where.relative is not None and Path(where.real).is_file()


def _always(tool: str, target: ResolvedPath | ParsedCommand | str, policy: Policy) -> str | None:
    """The rule an `always` saves: for a workspace script, the interpreter and the script
    (its arguments are the script's business); else exactly what was asked."""
    if isinstance(target, ParsedCommand) and target.argv and _workspace_script(target, policy):
        return shlex.join(target.argv[:2])
    return always_pattern(tool, target)


def _resolved_text(target: ResolvedPath | ParsedCommand | str) -> str:
    if isinstance(target, ParsedCommand):
        return target.display()
    if isinstance(target, ResolvedPath):
        return target.real or target.raw
    return target


def decide(policy: Policy, agent: str, tool: str, arguments: object) -> Decision:
    """Raises InvalidArgument (exit 2) for an unknown agent or tool; everything else is a
    Decision."""
    if agent not in policy.allowlists:
        raise InvalidArgument(f"unknown agent {agent!r} (agents: {', '.join(policy.allowlists)})",
                              exit_code=2)
    extra = policy.extra_tools.get(agent, {})
    known = TOOLS.get(tool) or extra.get(tool)
    if known is None and tool.startswith("mcp."):  # unknown, withheld or out of its scope
        return Decision(decision="deny", rule=None, reason=f"{tool} is not offered to {agent}: not one of "
                        "its MCP servers' tools, or withheld until a person approves it (agentdeck mcp)",
                        resolved="", always_rule=None)
    if known is None:
        raise InvalidArgument(f"unknown tool {tool!r} (tools: {', '.join(TOOLS)})", exit_code=2)
    if tool not in policy.allowlists[agent] and tool not in extra:
        return Decision(decision="deny", rule=None, reason=f"{tool} is not one of {agent}'s tools",
                        resolved="", always_rule=None)
    try:
        args = known.parse(arguments)
    except ToolError as err:
        return Decision(decision="deny", rule=None, reason=str(err), resolved="", always_rule=None)
    target = _target(tool, args, policy)
    resolved = _resolved_text(target)
    if isinstance(target, ResolvedPath) and target.problem:
        return Decision(decision="deny", rule=None, reason=f"{target.raw}: {target.problem}",
                        resolved=resolved, always_rule=None)
    rules = [r for r in policy.rules if applies(r, agent, tool)]
    for verdict in ("deny", "ask"):
        for rule in _ordered(rules, verdict, agent):
            if _matches(rule, target, for_deny=True):
                return Decision(decision=verdict, rule=rule.describe(), reason=f"a rule says {verdict}",
                                resolved=resolved, always_rule=None)
    forced = _forced_ask(tool, target, policy)
    always = None if forced else _always(tool, target, policy)
    for rule in _ordered(rules, "allow", agent):
        if _matches(rule, target, for_deny=False):
            if forced:
                return Decision(decision="ask", rule=rule.describe(), reason=forced, resolved=resolved,
                                always_rule=None)
            return Decision(decision="allow", rule=rule.describe(), reason="a rule allows it",
                            resolved=resolved, always_rule=always)
    return Decision(decision="ask", rule=None, reason=forced or "no rule allows this call",
                    resolved=resolved, always_rule=always)


def _ordered(rules: Iterable[Rule], verdict: str, agent: str) -> list[Rule]:
    """An agent's own rules before `*` rules, so the one shown is the most specific."""
    return sorted((r for r in rules if r.decision == verdict), key=lambda r: r.agent != agent)
