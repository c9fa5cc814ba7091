"""Options that turn a read-only command into one that writes files, runs programs or
reads outside the workspace. A command carrying one never matches an allow rule, so
review's `git diff` rule cannot be stretched into `git diff --output=~/.bashrc`.

Long options are matched with the abbreviations getopt-style parsers accept: git takes
`--out=F` for `--output=F`, so any unambiguous-looking prefix of three or more
characters counts.
"""

from __future__ import annotations

import re

RISKY: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # program: (long options, short options or exact words)
    "git": (
        frozenset({
            "--output", "--ext-diff", "--textconv", "--no-index", "--exec", "--exec-path",
            "--upload-pack", "--receive-pack", "--open-files-in-pager", "--config-env",
            "--git-dir", "--work-tree", "--namespace", "--output-directory", "--run",
        }),
        frozenset({"-c", "-C", "-O"}),
    ),
    "find": (frozenset(), frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint",
                                     "-fprint0", "-fprintf", "-fls"})),
    "sed": (frozenset({"--in-place"}), frozenset({"-i"})),
    "sort": (frozenset({"--output", "--compress-program"}), frozenset({"-o"})),
    "rg": (frozenset({"--pre", "--search-zip"}), frozenset({"-z"})),
    "tar": (frozenset({"--to-command", "--use-compress-program", "--checkpoint-action",
                       "--info-script", "--new-volume-script"}), frozenset({"-I", "-F"})),
    "awk": (frozenset(), frozenset()),
}
MIN_ABBREVIATION = 3  # `--o` is already a prefix git would expand


def _long_is_risky(token: str, risky_long: frozenset[str]) -> bool:
    name = token.split("=", 1)[0]
    return len(name) >= MIN_ABBREVIATION and any(opt.startswith(name) for opt in risky_long)


def _short_is_risky(program: str, token: str, risky_short: frozenset[str]) -> bool:
    if token in risky_short:
        return True
    if program == "find" or not token.startswith("-") or token.startswith("--"):
        return False
    if token[:2] in risky_short:  # a value attached: -oFILE, -C/dir
        return True
    return program == "sed" and "i" in token[1:]  # combined flags: -ni


# Interpreters that run a script file named as their first argument. In the sandbox an
# allow rule may match `python3 tools/x.py` (a workspace file, like `make test` runs
# workspace code); program text on the command line (-c, -e) or stdin always asks.
INTERPRETERS = re.compile(r"(python[0-9.]*|node|nodejs|bash|sh|dash|zsh|perl|ruby)")
# Take their program as an argument: never matched by an allow rule.
PROGRAM_TEXT = frozenset({"awk", "gawk", "mawk", "nawk"})


def interpreter_script(argv: list[str]) -> str | None:
    """The script of a plain interpreter invocation (`python3 x.py ...`): the first
    argument, when no option comes before it; None for anything else."""
    program = argv[0].rsplit("/", 1)[-1] if argv else ""
    if not INTERPRETERS.fullmatch(program) or len(argv) < 2 or argv[1].startswith("-"):
        return None
    return argv[1]


def risky_option(argv: list[str]) -> str | None:
    """The first option in `argv` that writes, executes or escapes, for its program."""
    program = argv[0].rsplit("/", 1)[-1] if argv else ""
    if program in PROGRAM_TEXT or INTERPRETERS.fullmatch(program):
        return f"{program} runs any program text it is given"
    if program not in RISKY:
        return None
    risky_long, risky_short = RISKY[program]
    for token in argv[1:]:
        if token == "--":
            break  # everything after is a path, not an option
        if token.startswith("--") and _long_is_risky(token, risky_long):
            return token
        if _short_is_risky(program, token, risky_short):
            return token
    return None
