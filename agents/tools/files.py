"""read_file, write_file, edit_file, list_dir, search_files: the workspace, nothing else.

Each call resolves its path again (the policy decided on the same function) and works
through agents.tools.fs, which never follows a symlink swapped in after the check.
Blocking file work runs on a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import subprocess
from pathlib import Path

import msgspec

from agents.policy.paths import ResolvedPath, resolve_path
from agents.tools import fs
from agents.tools.base import Tool, ToolContext, ToolError
from agents.tools.diffs import changes_summary

MAX_READ = 1 << 20  # bytes read_file returns at most
MAX_EDIT = 8 << 20  # bytes edit_file works on at most
MAX_SEARCH_FILE = 1 << 20
MAX_SEARCH_FILES = 5_000
MAX_MATCHES = 200
DIFF_SUFFIXES = (".diff", ".patch")  # read_file lists their changed lines after the text
SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", ".tox"}


class PathArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str


class WriteArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    content: str


class EditArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    old: str
    new: str


class AppendArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    text: str


class SearchArgs(msgspec.Struct, forbid_unknown_fields=True):
    pattern: str
    path: str = "."


def workspace_path(ctx: ToolContext, raw: str) -> ResolvedPath:
    resolved = resolve_path(raw, ctx.workspace, ctx.home)
    if resolved.problem or resolved.relative is None:
        raise ToolError(f"{raw}: {resolved.problem}")
    return resolved


def closest_line(text: str, wanted: str) -> str | None:
    """The file's line most like `wanted` (the `old` a model gave, or its `new` when old
    was empty), for an edit that did not match: measured, Qwen-1.5B sent the words of an
    error message, or nothing, as `old` until its steps ran out."""
    lines = [line for line in text.splitlines() if line.strip()]
    probes = [p for p in wanted.splitlines() if p.strip()] or [wanted]
    best: tuple[float, str] | None = None
    for probe in probes:
        for line in difflib.get_close_matches(probe, lines, n=1, cutoff=0.3):
            score = difflib.SequenceMatcher(None, probe, line).ratio()
            if best is None or score > best[0]:
                best = (score, line)
    return best[1] if best else None


def _hint(text: str, wanted: str) -> str:
    line = closest_line(text, wanted)
    return f"; the closest line in the file is {json.dumps(line, ensure_ascii=False)}" if line else ""


def _text(data: bytes) -> str | None:
    """UTF-8 text, or None for a binary file (a NUL byte near the start)."""
    if b"\x00" in data[:8192]:
        return None
    return data.decode("utf-8", "replace")


async def read_file(ctx: ToolContext, args: PathArgs) -> str:
    where = workspace_path(ctx, args.path)
    data, size = await asyncio.to_thread(fs.read_bytes, ctx.workspace, where.relative, MAX_READ)
    text = _text(data)
    if text is None:
        return f"{where.relative}: a binary file of {size} bytes"
    notes = [f"[… file is {size} bytes; the first {MAX_READ} shown]"] if size > MAX_READ else []
    # Counted here, as list_dir counts entries: measured, asked for a CSV's rows,
    # Qwen-1.5B tried calculate("len(cities.csv) - 1").
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    notes += [f"[{lines} line{'' if lines == 1 else 's'}]"] if size <= MAX_READ else []
    if where.relative.endswith(DIFF_SUFFIXES) and (changes := changes_summary(text)):
        notes.append(f"\n{changes}")
    return text + ("" if text.endswith("\n") or not text else "\n") + "\n".join(notes)


async def write_file(ctx: ToolContext, args: WriteArgs) -> str:
    where = workspace_path(ctx, args.path)
    data = args.content.encode("utf-8")
    await asyncio.to_thread(fs.write_bytes, ctx.workspace, where.relative, data)
    return f"wrote {len(data)} bytes to {where.relative}"


def edited_text(relative: str, text: str, old: str, new: str) -> str:
    """`text` with exactly one occurrence of `old` replaced by `new`; ToolError (the
    answer the model gets) when `old` is empty, missing or not unique. Pure: edit_file
    and the preview an approval shows both call it, so what is shown is what runs."""
    if not old:
        raise ToolError("edit_file: `old` is empty; copy the exact text to replace from the file"
                        + _hint(text, new) + " (to add at the end, use append_file)")
    count = text.count(old)
    if count == 0:
        raise ToolError(f"{relative}: the old text was not found; nothing changed" + _hint(text, old))
    if count > 1:
        raise ToolError(f"{relative}: the old text occurs {count} times; give more "
                        "surrounding text so that it matches exactly once")
    start = text.index(old)
    end = start + len(old)
    if not new and (start == 0 or text[start - 1] == "\n") and text[end:end + 1] == "\n":
        end += 1  # a whole line removed takes its line break along (no blank line left behind)
    return text[:start] + new + text[end:]


def appended_text(text: str, addition: str) -> str:
    """`addition` at the end of `text` on a line of its own: after a line break if `text`
    lacks a final one, and with one of its own. Pure, shared with the approval preview."""
    lead = "\n" if text and not text.endswith("\n") else ""
    tail = "" if addition.endswith("\n") else "\n"
    return text + lead + addition + tail


def planned_edit(workspace: Path, relative: str, old: str, new: str) -> tuple[str, str]:
    """(the file's text now, its text after edit_file): every check the tool makes, no write."""
    data, size = fs.read_bytes(workspace, relative, MAX_EDIT)
    if size > MAX_EDIT:
        raise ToolError(f"{relative}: {size} bytes is too large to edit")
    text = _text(data)
    if text is None:
        raise ToolError(f"{relative}: a binary file; not edited")
    return text, edited_text(relative, text, old, new)


def planned_append(workspace: Path, relative: str, addition: str) -> tuple[str, str]:
    """(the file's text now, "" when missing; its text after append_file): every check
    the tool makes, no write."""
    if not addition:
        raise ToolError("append_file: `text` is empty; nothing to add")
    try:
        data, size = fs.read_bytes(workspace, relative, MAX_EDIT)
    except FileNotFoundError:
        data, size = b"", 0
    if size > MAX_EDIT:
        raise ToolError(f"{relative}: {size} bytes is too large to append to")
    text = _text(data)
    if text is None:
        raise ToolError(f"{relative}: a binary file; nothing appended")
    return text, appended_text(text, addition)


async def edit_file(ctx: ToolContext, args: EditArgs) -> str:
    """Exact string replacement of exactly one occurrence."""
    where = workspace_path(ctx, args.path)
    _, updated = await asyncio.to_thread(planned_edit, ctx.workspace, where.relative, args.old, args.new)
    await asyncio.to_thread(fs.write_bytes, ctx.workspace, where.relative, updated.encode("utf-8"))
    removed, added = args.old.count("\n") + 1, args.new.count("\n") + 1
    return f"edited {where.relative}: 1 replacement (-{removed} +{added} lines)"


async def append_file(ctx: ToolContext, args: AppendArgs) -> str:
    """`text` added at the end, on a line of its own: after a line break if the file
    lacks a final one, and with one of its own (a missing file is created)."""
    where = workspace_path(ctx, args.path)
    _, updated = await asyncio.to_thread(planned_append, ctx.workspace, where.relative, args.text)
    await asyncio.to_thread(fs.write_bytes, ctx.workspace, where.relative, updated.encode("utf-8"))
    tail = "" if args.text.endswith("\n") else "\n"
    return f"appended {(args.text + tail).count(chr(10))} line(s) to {where.relative}"


async def list_dir(ctx: ToolContext, args: PathArgs) -> str:
    where = workspace_path(ctx, args.path)
    entries = await asyncio.to_thread(fs.list_entries, ctx.workspace, where.relative)
    if not entries:
        return f"{where.relative or '.'}: empty"
    lines = []
    for name, kind, size in entries:
        lines.append(f"{name}/" if kind == "dir" else f"{name}@" if kind == "link" else
                     f"{name}  {size} bytes" if kind == "file" else f"{name}  ({kind})")
    # Counted here: a small model asked "how many files?" miscounts a listing (measured).
    kinds = [kind for _, kind, _ in entries]
    counts = ", ".join(f"{kinds.count(k)} {noun}{'' if kinds.count(k) == 1 else 's'}"
                       for k, noun in (("file", "file"), ("dir", "folder"), ("link", "link")) if k in kinds)
    files = [(size, name) for name, kind, size in entries if kind == "file"]
    largest = f"; largest: {max(files)[1]}" if len(files) > 1 else ""  # ls -S's first line
    return "\n".join(lines) + f"\n({counts}{largest})"


def _candidates(workspace: Path, relative: str) -> list[str]:
    """Files under `relative`: git's view (tracked and untracked, not ignored) in a git
    repository, else a walk that skips the usual tool and VCS directories and symlinks."""
    if (workspace / ".git").is_dir():
        try:
            proc = subprocess.run(
                ["git", "-c", "core.fsmonitor=false", "-C", str(workspace), "ls-files", "-z",
                 "--cached", "--others",
                 "--exclude-standard", "--", relative],
                capture_output=True, timeout=20, check=True, stdin=subprocess.DEVNULL,
            )
            return [p for p in proc.stdout.decode("utf-8", "replace").split("\0") if p][:MAX_SEARCH_FILES]
        except (OSError, subprocess.SubprocessError):
            pass  # not usable: walk instead
    found: list[str] = []
    for root, dirs, files in os.walk(workspace / relative, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            found.append(Path(root, name).relative_to(workspace).as_posix())
            if len(found) >= MAX_SEARCH_FILES:
                return found
    return found


def _search(workspace: Path, relative: str, pattern: re.Pattern[str]) -> str:
    matches: list[str] = []
    for rel in _candidates(workspace, relative):
        try:
            data, size = fs.read_bytes(workspace, rel, MAX_SEARCH_FILE)
        except OSError:
            continue  # a symlink, a directory, gone meanwhile
        text = _text(data)
        if text is None or size > MAX_SEARCH_FILE:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if pattern.search(line):
                matches.append(f"{rel}:{number}: {line[:300]}")
                if len(matches) >= MAX_MATCHES:
                    return "\n".join(matches) + f"\n[… stopped at {MAX_MATCHES} matches]"
    return "\n".join(matches) if matches else "no matches"


async def search_files(ctx: ToolContext, args: SearchArgs) -> str:
    where = workspace_path(ctx, args.path)
    try:
        pattern = re.compile(args.pattern)
    except re.error as err:
        raise ToolError(f"search_files: bad pattern {args.pattern!r}: {err}") from None
    return await asyncio.to_thread(_search, ctx.workspace, where.relative or ".", pattern)


FILE_TOOLS = [
    Tool("read_file", "Read a text file in the workspace.", PathArgs, "read", read_file),
    Tool("write_file", "Create or replace a file in the workspace with the given content.",
         WriteArgs, "write", write_file),
    Tool("edit_file", "Replace exactly one occurrence of `old` with `new` in a workspace file.",
         EditArgs, "write", edit_file),
    Tool("append_file", "Add text at the end of a workspace file, on a line of its own.",
         AppendArgs, "write", append_file),
    Tool("list_dir", "List the entries of a directory in the workspace.", PathArgs, "read", list_dir),
    Tool("search_files", "Search the workspace's text files for a regular expression "
         "(ignored and binary files skipped).", SearchArgs, "read", search_files, timeout_s=60),
]
