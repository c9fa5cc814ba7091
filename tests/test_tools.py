"""Each tool on a real workspace and a real database: what it does, and what it refuses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import AGENTS, call, context

from agents.protocol import OWNER
from agents.store import AsyncStore, queries
from agents.store import reducers as r
from agents.tools import TOOLS, invoke
from agents.tools.base import MODEL_CAP


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    s = await AsyncStore(tmp_path / "agentdeck.db", AGENTS).open()
    yield s
    await s.close()


async def test_write_read_edit_list(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws)
    assert (await call(ctx, "write_file", path="pkg/mod.py", content="a = 1\nb = 1\n")).status == "ok"
    assert (await call(ctx, "read_file", path="pkg/mod.py")).text == "a = 1\nb = 1\n[2 lines]"  # counted
    ambiguous = await call(ctx, "edit_file", path="pkg/mod.py", old=" = 1", new=" = 2")
    assert ambiguous.status == "error" and "occurs 2 times" in ambiguous.text
    missing = await call(ctx, "edit_file", path="pkg/mod.py", old="c = 1", new="c = 2")
    assert missing.status == "error" and "not found" in missing.text
    assert (ws / "pkg/mod.py").read_text() == "a = 1\nb = 1\n"  # refused edits change nothing
    done = await call(ctx, "edit_file", path="pkg/mod.py", old="b = 1", new="b = 2")
    assert done.status == "ok" and (ws / "pkg/mod.py").read_text() == "a = 1\nb = 2\n"
    # A whole line removed leaves no blank line; part of a line keeps its break.
    assert (await call(ctx, "edit_file", path="pkg/mod.py", old="a = 1", new="")).status == "ok"
    assert (ws / "pkg/mod.py").read_text() == "b = 2\n"
    assert (await call(ctx, "edit_file", path="pkg/mod.py", old=" = 2", new="")).status == "ok"
    assert (ws / "pkg/mod.py").read_text() == "b\n"
    (ws / "pkg/mod.py").write_text("a = 1\nb = 2\n")
    listing = await call(ctx, "list_dir", path=".")
    assert listing.text == "pkg/\n(1 folder)"  # counted by the tool, not left to the model
    (ws / "pkg/b.txt").write_text("x")
    assert (await call(ctx, "list_dir", path="pkg")).text == "b.txt  1 bytes\nmod.py  12 bytes\n(2 files; largest: mod.py)"


async def test_append_and_the_closest_line_when_an_edit_misses(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws)
    (ws / "CHANGELOG.md").write_text("# Changes\n\n- first release")  # no final line break
    assert (await call(ctx, "append_file", path="CHANGELOG.md", text="- fixed the login bug")).status == "ok"
    assert (ws / "CHANGELOG.md").read_text() == "# Changes\n\n- first release\n- fixed the login bug\n"
    assert (await call(ctx, "append_file", path="new/list.txt", text="eggs\n")).status == "ok"
    assert (ws / "new/list.txt").read_text() == "eggs\n"  # a missing file is created
    empty = await call(ctx, "append_file", path="new/list.txt", text="")
    assert empty.status == "error" and "nothing to add" in empty.text
    # Measured: the 1.5B sent "" or an error message's words as `old`; the error names the
    # line it most likely meant, exactly as the file has it.
    (ws / "config.json").write_text('{\n  "name": "demo",\n  "retries": 3\n}\n')
    blank = await call(ctx, "edit_file", path="config.json", old="", new='"retries": 5')
    assert blank.status == "error" and 'the closest line in the file is "  \\"retries\\": 3"' in blank.text
    assert "append_file" in blank.text
    missed = await call(ctx, "edit_file", path="config.json", old='"retries":3', new='"retries": 5')
    assert missed.status == "error" and "not found" in missed.text and '\\"retries\\": 3"' in missed.text
    far = await call(ctx, "edit_file", path="config.json", old="zzzzzzzzzzzz", new="q")
    assert far.status == "error" and "closest" not in far.text  # nothing alike: no guess
    assert (ws / "config.json").read_text() == '{\n  "name": "demo",\n  "retries": 3\n}\n'


async def test_a_diff_read_lists_its_changed_lines_numbered(store: AsyncStore, ws: Path) -> None:
    """The numbers in the new file are written nowhere in a diff; a reviewer must name one."""
    diff = ("--- a/m.py\n+++ b/m.py\n@@ -1,4 +1,4 @@\n a = 1\n b = 2\n-c = 3\n+c = 4\n d = 5\n"
            "@@ -20,2 +20,3 @@\n x = 1\n+y = 2\n z = 3\n")
    (ws / "change.diff").write_text(diff)
    (ws / "notes.txt").write_text(diff)  # the same text in a file that is not a diff: left as it is
    shown = (await call(context(store, ws), "read_file", path="change.diff")).text
    assert shown.startswith(diff)
    listed = shown[len(diff):].split("[changed lines: path:line in the new file (+ added) or the old file "
                                     "(- removed)]\n")[1]
    assert listed.splitlines() == ["m.py:3 - c = 3", "m.py:3 + c = 4", "m.py:21 + y = 2"]
    assert (await call(context(store, ws), "read_file", path="notes.txt")).text == diff + "[12 lines]"
    (ws / "broken.diff").write_text("not a diff at all\n@@ nonsense\n")
    broken = (await call(context(store, ws), "read_file", path="broken.diff")).text
    assert broken == "not a diff at all\n@@ nonsense\n[2 lines]"


async def test_binary_and_large_files(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws)
    (ws / "blob.bin").write_bytes(b"\x00\x01" * 100)
    assert "a binary file of 200 bytes" in (await call(ctx, "read_file", path="blob.bin")).text
    (ws / "big.txt").write_text("".join(f"line {i}\n" for i in range(20000)))
    result, stored = await invoke(TOOLS["read_file"], ctx, {"path": "big.txt"})
    assert result.truncated and len(result.text) < MODEL_CAP + 200
    assert result.text.startswith("line 0\n") and result.text.endswith("line 19999\n[20000 lines]")
    assert "characters omitted" in result.text and "line 10000" in stored


async def test_search_skips_binary_and_ignored_files(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws)
    await asyncio.to_thread(subprocess.run, ["git", "init", "-q", str(ws)], check=True)
    (ws / ".gitignore").write_text("build/\n")
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("def needle():\n    return 1\n")
    (ws / "build").mkdir()
    (ws / "build" / "gen.py").write_text("needle = 'generated'\n")
    (ws / "data.bin").write_bytes(b"needle\x00\x00")
    result = await call(ctx, "search_files", pattern=r"needle\(")
    assert result.text == "src/a.py:1: def needle():"
    assert "build/" not in (await call(ctx, "search_files", pattern="needle")).text
    bad = await call(ctx, "search_files", pattern="(")
    assert bad.status == "error" and "bad pattern" in bad.text


async def test_arguments_are_strict(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws)
    for tool, args in [("read_file", {}), ("read_file", {"path": 3}), ("read_file", {"path": "x", "mode": "r"}),
                       ("run_shell", {"command": ["ls"]}), ("memory_write", {"content": "x", "kind": "rumour"})]:
        result, _ = await invoke(TOOLS[tool], ctx, args)
        assert result.status == "error" and "bad arguments" in result.text, (tool, args, result)
    result, _ = await invoke(TOOLS["read_file"], ctx, "not an object")
    assert result.status == "error"


async def test_messages_channels_and_delegation(store: AsyncStore, ws: Path) -> None:
    task = await store.write(r.create_task, OWNER, "plan", owner="lead")
    lead = context(store, ws, "lead", task_id=task.id)
    assert (await call(lead, "send_message", to="dev", text="start please")).status == "ok"
    assert (await call(lead, "post_channel", channel="general", text="on it")).status == "ok"
    read = await call(context(store, ws, "scribe"), "read_messages", channel="#general")
    assert read.text.endswith("lead: on it")
    sub = await call(lead, "delegate", to="dev", title="write the code", priority=3)
    assert sub.status == "ok"
    tasks = await store.read(queries.tasks)
    child = tasks[-1]
    assert (child.parent_id, child.owner, child.created_by, child.priority) == (task.id, "dev", "lead", 3)
    listed = await call(lead, "read_tasks", owner="dev")
    assert f"#{child.id} [queued] dev p3: write the code" in listed.text
    assert listed.text.endswith("(1 task: 1 queued)")
    await store.write(r.set_task_status, "dev", child.id, "failed", "the mirror was down")
    ended = await call(lead, "read_tasks")
    assert f"#{child.id} [failed] dev p3: write the code → the mirror was down" in ended.text  # how it ended
    # Lead's own task (the asking one) is not listed: a small model answered with its line.
    assert ended.text.endswith("(1 task: 1 failed)") and "plan" not in ended.text, ended.text
    assert (await call(context(store, ws, "scribe"), "read_tasks")).text.endswith("(2 tasks: 1 queued, 1 failed)")
    matched = await call(lead, "read_tasks", matching="which code was written?")
    assert matched.text.startswith(f"#{child.id} [failed]"), matched.text
    done = await call(lead, "read_tasks", status="failed")
    assert done.text.endswith("(1 task: 1 failed)")
    # Only real statuses: a model's "completed" is a bad argument, not "no tasks".
    made_up = await call(lead, "read_tasks", status="completed")
    assert made_up.status == "error" and "bad arguments" in made_up.text
    enum = TOOLS["read_tasks"].schema()["$defs"]["ReadTasksArgs"]["properties"]["status"]
    assert "done" in json.dumps(enum) and "completed" not in json.dumps(enum)  # the grammar offers these
    no_task = await call(context(store, ws, "lead"), "delegate", to="dev", title="x")
    assert no_task.status == "error" and "no current task" in no_task.text


async def test_memory_write_and_search(store: AsyncStore, ws: Path) -> None:
    scribe = context(store, ws, "scribe")
    assert (await call(scribe, "memory_write", content="the build uses ninja", tags=["build"],
                       scope="shared")).status == "ok"
    await call(scribe, "memory_write", content="private: ninja is slow on this box")
    assert "the build uses ninja" in (await call(context(store, ws, "dev"), "memory_search", query="ninja")).text
    assert "private" not in (await call(context(store, ws, "dev"), "memory_search", query="ninja")).text
    assert "private" in (await call(scribe, "memory_search", query="ninja slow")).text


async def test_machine_tools(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws, "ops")
    health = await call(ctx, "system_health")
    assert health.status == "ok"
    for part in ("cpu:", "memory:", "disk (workspace):", "gpu"):
        assert part in health.text
    procs = await call(ctx, "list_processes", sort="memory", limit=200)
    head, *ranked = procs.text.splitlines()
    assert head == "processes by memory, the most first:"
    assert any(f"(pid {os.getpid()}," in line for line in ranked)
    sizes = [int(re.search(r": (\d+) MB memory", line).group(1)) for line in ranked]  # type: ignore[union-attr]
    assert sizes == sorted(sizes, reverse=True) and ranked[0].startswith("1. ")


async def test_run_shell_reports_the_exit_status_and_times_out(store: AsyncStore, ws: Path) -> None:
    ctx = context(store, ws)
    assert (await call(ctx, "run_shell", command="echo out; echo err >&2; exit 3")).text == "out\nerr\n[exit status 3]"
    slow = await call(ctx, "run_shell", command="sleep 30", timeout_s=1)
    assert slow.status == "timeout"


def _numbers(schema: dict) -> list[tuple[str, dict]]:
    """(field, its integer or number schema) for each numeric field of a tool's schema."""
    found = []
    for struct in schema.get("$defs", {}).values():
        for name, field in struct.get("properties", {}).items():
            for alternative in field.get("anyOf", [field]):
                if alternative.get("type") in ("integer", "number"):
                    found.append((f"{struct['title']}.{name}", alternative))
    return found


def test_every_number_a_tool_takes_has_a_range_in_its_schema() -> None:
    """The bounds are in the JSON schema the step grammar is built from, and checked when
    a call is parsed: a huge number is a bad argument, never an overflow later."""
    found = [pair for tool in TOOLS.values() for pair in _numbers(tool.schema())]
    assert {"ProcessArgs.limit", "ShellArgs.timeout_s", "ReadLogArgs.task"} <= {name for name, _ in found}
    for name, field in found:
        assert "minimum" in field and "maximum" in field, name


@pytest.mark.parametrize(("tool", "arguments", "message"), [
    ("list_processes", {"limit": 10**30}, "limit must be 1..200"),
    ("read_log", {"task": -(10**30)}, "task must be 1..9223372036854775807"),
    ("run_shell", {"command": "ls", "timeout_s": float("inf")}, "timeout_s must be 0..600"),
    ("read_tasks", {"limit": 0}, "limit must be 1..200"),
])
async def test_out_of_range_numbers_are_bad_arguments_naming_field_and_range(
        store: AsyncStore, ws: Path, tool: str, arguments: dict, message: str) -> None:
    result, stored = await invoke(TOOLS[tool], context(store, ws, agent="ops"), arguments)
    assert result.status == "error" and "bad arguments" in result.text and message in result.text
    assert "Overflow" not in result.text and stored == result.text


def test_a_logged_traceback_keeps_its_lines_and_the_message_stays_one_line() -> None:
    import logging
    import sys

    from app.logs import SafeFormatter

    try:
        raise OverflowError("can't serialize\nints")
    except OverflowError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "tool %s failed", ("a\nb",), sys.exc_info())
    lines = SafeFormatter("agentdeck: %(message)s").format(record).splitlines()
    assert lines[0] == "agentdeck: tool a\\x0ab failed"
    assert len(lines) > 3 and all(line.startswith("  ") for line in lines[1:])
    assert lines[1].strip() == "Traceback (most recent call last):" and "\\x0a" not in lines[1]
