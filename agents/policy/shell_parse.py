"""Shell commands, parsed with tree-sitter-bash: what would run, and whether it is plain.

Only a *plain* command can match an allow rule: one simple command whose words are all
literal (bare words, '...' and "..." without expansions, backslash escapes). Everything
else — pipes, `;`, `&&`, `||`, newlines, redirections, substitutions, expansions, globs,
assignments before the command, subshells, here-documents, background `&` — makes it not
plain, and the reason is recorded so that the approval can say why it asks.

Deny rules must see every command anywhere in the tree, so `commands` lists each simple
command found (inside substitutions, pipelines, subshells, `bash -c '...'` strings, and
behind wrappers such as `env`, `sudo`, `xargs`, `timeout`).
"""

from __future__ import annotations

import functools
import re
import shlex

import msgspec

MAX_COMMAND = 16_384
MAX_NESTING = 8  # `bash -c "bash -c ..."` unwrapped this deep at most

# Characters bash treats differently from tree-sitter (`\r` is a separator to the parser,
# a letter to bash) or that can hide text on a screen: never part of a plain command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# Unquoted characters that make bash expand a word: globs, braces, history, and a tilde
# at the start of a word or after `=` or `:` (HEAD~1 stays as it is).
_EXPANDING = re.compile(r"[*?\[\]{}!]|(?:^|[=:])~")

# Wrappers that run their arguments as a command, so deny rules look through them:
# name -> (options that take an argument, positional arguments before the command).
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "env": (frozenset({"-u", "--unset", "-C", "--chdir"}), 0),
    "sudo": (frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-R", "-r", "-t", "-T", "-U"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "ionice": (frozenset({"-c", "-n", "-p", "-P", "-u"}), 0),
    "timeout": (frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
    "stdbuf": (frozenset({"-i", "-o", "-e"}), 0),
    "xargs": (frozenset({"-a", "-d", "-E", "-e", "-I", "-i", "-L", "-l", "-n", "-P", "-s"}), 0),
    "taskset": (frozenset(), 1),
    "chroot": (frozenset({"--userspec", "--groups"}), 1),
    "flock": (frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}), 1),
    "watch": (frozenset({"-n", "--interval", "-d"}), 0),
    "strace": (frozenset({"-e", "-o", "-p", "-s", "-u", "-E"}), 0),
    **{name: (frozenset(), 0) for name in ("nohup", "command", "exec", "time", "setsid", "unbuffer")},
}
# Options whose argument is itself a command line: `bash -c`, `env -S`, `flock -c`.
_SCRIPT_OPTIONS = {"-c", "--command", "-S", "--split-string"}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish"}


# How a construct is named in an approval (tree-sitter's node type otherwise).
_NAMES = {
    "pipeline": "pipe", "list": "&& or ||", "redirected_statement": "redirection",
    "file_redirect": "redirection", "heredoc_redirect": "here-document",
    "herestring_redirect": "here-string", "command_substitution": "command substitution",
    "process_substitution": "process substitution", "simple_expansion": "expansion",
    "expansion": "expansion", "variable_assignment": "assignment before the command",
    "subshell": "subshell", "compound_statement": "{ ... } group", "negated_command": "!",
    "ansi_c_string": "$'...' string", "arithmetic_expansion": "expansion",
    "brace_expression": "glob", "test_command": "[[ test ]]",
}


# Nodes that are parts of a construct already named (or of a plain command).
_PARTS = frozenset({
    "program", "word", "number", "variable_name", "string", "raw_string", "string_content",
    "concatenation", "command_name", "heredoc_start", "heredoc_body", "heredoc_end",
    "heredoc_content", "file_descriptor", "special_variable_name", "comment",
})


class ParsedCommand(msgspec.Struct, frozen=True):
    text: str
    plain: bool
    argv: list[str] | None  # the words of a plain command, unquoted
    commands: list[list[str]]  # every simple command found, literal words as bash sees them
    constructs: list[str]  # why it is not plain (sorted, unique)

    def display(self) -> str:
        """What an approval shows as the parsed command."""
        if self.plain and self.argv is not None:
            return shlex.join(self.argv)
        found = "; ".join(shlex.join(c) for c in self.commands) or "none"
        return f"{self.text}  [not a plain command: {', '.join(self.constructs)}; runs: {found}]"


@functools.cache
def _parser() -> object:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


def _unescape_word(text: str) -> str:
    """A bare word as bash passes it on: a backslash quotes the next character."""
    return re.sub(r"\\(.|$)", r"\1", text, flags=re.DOTALL)


def _unescape_double(text: str) -> str:
    """Inside "...": a backslash quotes only $ ` " \\ and newline."""
    return re.sub(r'\\([$`"\\\n])', lambda m: "" if m.group(1) == "\n" else m.group(1), text)


def _literal(node: object) -> str | None:
    """The word a node stands for, when bash would pass it on unchanged; else None."""
    kind = node.type  # type: ignore[attr-defined]
    text = node.text.decode("utf-8", "surrogateescape")  # type: ignore[attr-defined]
    if kind in ("word", "number"):
        unescaped_only = re.sub(r"\\.", "", text, flags=re.DOTALL)  # what is not backslash-quoted
        if _EXPANDING.search(unescaped_only) or "$" in unescaped_only or "`" in unescaped_only:
            return None
        return _unescape_word(text)
    if kind == "raw_string":
        return text[1:-1]
    if kind == "string":
        # Literal when nothing inside expands; the text between the quotes, not the
        # children, since tree-sitter leaves whitespace-only content out of them.
        if any(c.type != "string_content" for c in node.named_children):  # type: ignore[attr-defined]
            return None
        return _unescape_double(text[1:-1])
    if kind == "concatenation":
        if any(not c.is_named for c in node.children):  # type: ignore[attr-defined]
            return None  # a bare `$` or the like: not worth guessing
        pieces = [_literal(c) for c in node.named_children]  # type: ignore[attr-defined]
        return None if any(p is None for p in pieces) else "".join(pieces)  # type: ignore[arg-type]
    return None


def _blanks(gap: str) -> list[str] | None:
    """The text tree-sitter skips between two words, split where bash splits it: it drops
    `\\ ` and `\\<tab>` as if they were blanks, where bash passes an escaped space on as part
    of a word (`git \\ status` runs `git ' status'`). The first piece belongs to the word
    before, the last to the word after, any between stand alone; None: not just blanks."""
    pieces = [""]
    blank = False
    i = 0
    while i < len(gap):
        if gap[i] == "\\" and i + 1 < len(gap):
            if gap[i + 1] != "\n":  # backslash-newline is a line continuation: nothing
                pieces[-1] += gap[i + 1]
            blank = False
            i += 2
        elif gap[i] in " \t\n":
            if not blank:
                pieces.append("")
            blank = True
            i += 1
        else:
            return None
    return pieces


def _prev_end(node: object) -> int:
    """Where the token before `node` ends (0: the start of the text)."""
    while node is not None:
        if node.prev_sibling is not None:  # type: ignore[attr-defined]
            return node.prev_sibling.end_byte  # type: ignore[attr-defined]
        node = node.parent  # type: ignore[attr-defined]
    return 0


def _next_start(node: object, end: int) -> int:
    """Where the token after `node` starts (`end`: the end of the text)."""
    while node is not None:
        if node.next_sibling is not None:  # type: ignore[attr-defined]
            return node.next_sibling.start_byte  # type: ignore[attr-defined]
        node = node.parent  # type: ignore[attr-defined]
    return end


class _Walk:
    def __init__(self, source: bytes) -> None:
        self.source = source
        self.commands: list[list[str]] = []
        self.constructs: set[str] = set()

    def visit(self, node: object, depth: int) -> None:
        kind = node.type  # type: ignore[attr-defined]
        if kind == "command":
            self.command(node, depth)
        elif node.is_named and kind not in _PARTS:  # type: ignore[attr-defined]
            self.constructs.add(_NAMES.get(kind, kind.replace("_", " ")))
        for child in node.children:  # type: ignore[attr-defined]
            if kind == "command" and child.type in ("command_name", "word", "string", "raw_string",
                                                     "concatenation", "number"):
                # Walk into them only for substitutions they may hold.
                self._substitutions(child, depth)
                continue
            self.visit(child, depth)

    def _substitutions(self, node: object, depth: int) -> None:
        for child in node.children:  # type: ignore[attr-defined]
            if child.type in ("command_substitution", "process_substitution"):
                self.visit(child, depth)
            elif child.is_named:  # type: ignore[attr-defined]
                if child.type in ("simple_expansion", "expansion", "arithmetic_expansion"):
                    self.constructs.add("expansion")
                self._substitutions(child, depth)

    def command(self, node: object, depth: int) -> None:
        if any(not c.is_named for c in node.children):  # type: ignore[attr-defined]
            self.constructs.add("unusual syntax")  # a bare `$` between words, say
        words: list[str] = []
        open_word = False  # the last word may go on (nothing unescaped after it yet)
        previous_end = _prev_end(node)
        for child in node.named_children:  # type: ignore[attr-defined]
            if child.start_byte == previous_end and open_word:
                # Two words with nothing between them are one word to bash (`""\;` is `;`);
                # tree-sitter-bash sometimes splits them: never plain, so never allowed.
                self.constructs.add("unusual syntax")
            joins, prefix = self._gap(words, open_word, previous_end, child.start_byte)
            previous_end = child.end_byte
            if child.type == "variable_assignment":
                self.constructs.add("assignment before the command")
                open_word = False
                continue
            is_name = child.type == "command_name" and child.named_children
            target = child.named_children[0] if is_name else child
            value = _literal(target)
            if value is None:
                value = target.text.decode("utf-8", "surrogateescape")
                self.constructs.add("expansion" if "$" in value or "`" in value else "glob")
            if joins:
                words[-1] += value
            else:
                words.append(prefix + value)
            open_word = True
        _, rest = self._gap(words, open_word, previous_end, _next_start(node, len(self.source)))
        if rest:
            words.append(rest)
        if words:
            self.commands.append(words)
            self._unwrap(words, depth)

    def _gap(self, words: list[str], open_word: bool, start: int, end: int) -> tuple[bool, str]:
        """Adds to `words` what bash makes of the escaped blanks in source[start:end];
        returns (the next word continues the last one, text the next word starts with)."""
        pieces = _blanks(self.source[start:end].decode("utf-8", "surrogateescape"))
        if pieces is None:
            self.constructs.add("unusual syntax")
            return False, ""
        if len(pieces) == 1:
            if open_word:
                words[-1] += pieces[0]
                return True, ""
            return False, pieces[0]
        if open_word:
            words[-1] += pieces[0]
        elif pieces[0]:
            words.append(pieces[0])
        words.extend(p for p in pieces[1:-1] if p)
        return False, pieces[-1]

    def _unwrap(self, words: list[str], depth: int) -> None:
        """The command a wrapper runs, and the script a shell's -c runs, for deny rules."""
        if depth >= MAX_NESTING:
            return
        rest = words
        while rest and rest[0].rsplit("/", 1)[-1] in _WRAPPERS:
            takes_argument, positional = _WRAPPERS[rest[0].rsplit("/", 1)[-1]]
            i = 1
            while i < len(rest):
                word = rest[i]
                if word in _SCRIPT_OPTIONS and i + 1 < len(rest):
                    self._script(rest[i + 1], depth)
                    i += 2
                elif word in takes_argument:
                    i += 2
                elif word.startswith("-") or ("=" in word and not word.startswith("=")):
                    i += 1  # a flag, an --option=value, or env's NAME=value
                else:
                    break
            i += positional
            if i + 1 < len(rest) and rest[i] in _SCRIPT_OPTIONS:  # `flock FILE -c CMD`
                self._script(rest[i + 1], depth)
                return
            rest = rest[i:]
            if rest:
                self.commands.append(rest)
        if rest and rest[0].rsplit("/", 1)[-1] in _SHELLS:
            for i, word in enumerate(rest[1:-1], start=1):
                if word in _SCRIPT_OPTIONS or (word.startswith("-") and "c" in word.lstrip("-")
                                               and not word.startswith("--")):
                    self._script(rest[i + 1], depth)
                    break

    def _script(self, text: str, depth: int) -> None:
        inner = parse_command(text, _depth=depth + 1)
        self.commands.extend(inner.commands)
        self.constructs.update(inner.constructs)


def parse_command(text: str, *, _depth: int = 0) -> ParsedCommand:
    """Parse `text` as bash does (as far as a policy needs)."""
    constructs: set[str] = set()
    if len(text) > MAX_COMMAND:
        return ParsedCommand(text=text[:200] + "…", plain=False, argv=None, commands=[],
                             constructs=["too long"])
    if _CONTROL.search(text):
        constructs.add("control or invisible characters")
    source = text.encode("utf-8", "surrogateescape")
    tree = _parser().parse(source)  # type: ignore[attr-defined]
    root = tree.root_node
    if root.has_error:
        constructs.add("does not parse")
    walk = _Walk(source)
    try:
        walk.visit(root, _depth)
    except RecursionError:  # $( $( $( ... nested thousands deep: ask, never crash
        constructs.add("nested too deeply")
    constructs |= walk.constructs
    top = [c for c in root.children]
    if len(top) != 1 or top[0].type != "command":
        kinds = {c.type for c in top}
        if len(top) > 1:
            constructs.add("several commands" if "&" not in kinds else "background &")
        elif not top:
            constructs.add("empty")
    if not walk.commands:
        constructs.add("no command")
    plain = not constructs
    argv = walk.commands[0] if plain else None
    return ParsedCommand(text=text, plain=plain, argv=argv, commands=walk.commands,
                         constructs=sorted(constructs))
