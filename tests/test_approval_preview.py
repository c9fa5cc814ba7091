"""An approval for write_file, edit_file or append_file shows the diff of what the call
would change, computed by the tool's own functions: what the gate shows is what runs.
Real files, a real Gate on a real store; the diff is capped and terminal-safe wherever
it is shown (the CLI listing, the approval lines, the cockpit's modal)."""

from __future__ import annotations

import asyncio
import difflib
from pathlib import Path
from typing import Any

import pytest
from helpers import ok
from textual.app import App
from textual.widgets import Static

from agents.checkpoints.preview import (
    MAX_DIFF_LINES,
    MAX_PREVIEW_CHARS,
    MAX_PREVIEW_LINES,
    unified,
    write_preview,
)
from agents.config import Config, parse_config
from agents.gate import Gate, GateOutcome
from agents.protocol import OWNER, Approval
from agents.runtime.approval_text import approval_lines
from agents.store import AsyncStore, queries
from agents.store import reducers as r
from agents.tools.base import ToolError
from agents.tools.files import appended_text, edited_text
from widgets.approval import ApprovalModal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(home: Path, ws: Path) -> Config:
    text = f'workspace = "{ws}"\n'
    (home / "config.toml").write_text(text)  # the same config for `agentdeck approvals`
    return parse_config(text)


async def ask(astore: AsyncStore, config: Config, home: Path, tool: str, arguments: dict[str, Any], *,
              approve: bool) -> tuple[Approval, GateOutcome]:
    """One call through the gate (dev asks for every write), answered once asked; the
    approval as the store holds it, and the call's outcome."""
    asked: list[Approval] = []

    async def answer(approval: Approval) -> None:
        asked.append(approval)
        await astore.write(r.decide_approval, OWNER, approval.id, approve)

    outcome = await Gate(astore, config, home).call("dev", tool, arguments, on_ask=answer)
    assert outcome.decision.decision == "ask" and len(asked) == 1
    [stored] = [a for a in await astore.read(queries.approvals, status=None) if a.id == asked[0].id]
    assert stored.preview == asked[0].preview  # the row carries it, for every front end
    return stored, outcome


async def test_write_over_a_file_shows_the_lines_removed_and_added(astore: AsyncStore, config: Config,
                                                                   home: Path, ws: Path) -> None:
    (ws / "notes.txt").write_text("keep\nold line\nkeep too\n")
    approval, outcome = await ask(astore, config, home, "write_file",
                                  {"path": "notes.txt", "content": "keep\nnew line\nkeep too\n"}, approve=False)
    assert approval.preview is not None
    assert approval.preview.splitlines() == ["--- a/notes.txt", "+++ b/notes.txt", "@@ -1,3 +1,3 @@",
                                             " keep", "-old line", "+new line", " keep too"]
    assert outcome.result.status == "denied" and (ws / "notes.txt").read_text() == "keep\nold line\nkeep too\n"
    shown = approval_lines(approval, 0.0)
    assert shown[-8:] == ["  would change:", "    --- a/notes.txt", "    +++ b/notes.txt",
                          "    @@ -1,3 +1,3 @@", "     keep", "    -old line", "    +new line", "     keep too"]


async def test_an_approved_edit_changes_exactly_what_its_preview_showed(astore: AsyncStore, config: Config,
                                                                        home: Path, ws: Path) -> None:
    before = "".join(f"line {i}\n" for i in range(40)) + "def f():\n    return 1\n" + "tail\n" * 10
    (ws / "f.py").write_text(before)
    approval, outcome = await ask(astore, config, home, "edit_file",
                                  {"path": "f.py", "old": "    return 1\n", "new": "    return 2\n    # two\n"},
                                  approve=True)
    assert outcome.result.status == "ok", outcome.result.text
    after = (ws / "f.py").read_text()
    assert approval.preview == unified("f.py", before, after, new=False)  # shown == run
    lines = approval.preview.splitlines()
    assert "-    return 1" in lines and "+    return 2" in lines and "+    # two" in lines
    assert lines[2] == "@@ -39,7 +39,8 @@"  # numbered as in the whole file, not the trimmed middle
    assert not [x for x in lines[3:] if x.startswith(("-", "+")) and "return" not in x and "two" not in x]


async def test_an_approved_append_changes_exactly_what_its_preview_showed(astore: AsyncStore, config: Config,
                                                                          home: Path, ws: Path) -> None:
    (ws / "log.md").write_text("first\nlast, no line break")
    approval, outcome = await ask(astore, config, home, "append_file", {"path": "log.md", "text": "added"},
                                  approve=True)
    assert outcome.result.status == "ok", outcome.result.text
    assert (ws / "log.md").read_text() == "first\nlast, no line break\nadded\n"
    assert approval.preview == unified("log.md", "first\nlast, no line break", (ws / "log.md").read_text(),
                                       new=False)
    assert approval.preview.splitlines()[-4:] == ["-last, no line break", "\\ No newline at end of file",
                                                  "+last, no line break", "+added"]


async def test_a_new_file_shows_every_line_added(astore: AsyncStore, config: Config, home: Path,
                                                 ws: Path) -> None:
    approval, outcome = await ask(astore, config, home, "write_file",
                                  {"path": "sub/new.txt", "content": "a\nb\nc\n"}, approve=True)
    assert outcome.result.status == "ok"
    assert approval.preview == "--- /dev/null\n+++ b/sub/new.txt\n@@ -0,0 +1,3 @@\n+a\n+b\n+c"
    assert (ws / "sub/new.txt").read_text() == "a\nb\nc\n"


async def test_a_binary_file_is_said_in_one_line(astore: AsyncStore, config: Config, home: Path,
                                                 ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    written, _ = await ask(astore, config, home, "write_file", {"path": "blob.bin", "content": "text"},
                           approve=False)
    assert written.preview == "blob.bin: a binary file of 300 bytes, replaced by 4 bytes of text"
    edited, outcome = await ask(astore, config, home, "edit_file",
                                {"path": "blob.bin", "old": "x", "new": "y"}, approve=True)
    assert edited.preview == outcome.result.text == "blob.bin: a binary file; not edited"  # the tool's answer


async def test_an_edit_that_would_not_apply_says_what_the_tool_would_answer(
        astore: AsyncStore, config: Config, home: Path, ws: Path) -> None:
    (ws / "a.txt").write_text("alpha\nbeta\nalpha\n")
    missing, outcome = await ask(astore, config, home, "edit_file", {"path": "a.txt", "old": "gamma", "new": "x"},
                                 approve=True)
    assert missing.preview is not None and missing.preview.startswith(
        "a.txt: the old text was not found; nothing would change")
    assert outcome.result.status == "error"
    assert missing.preview == outcome.result.text.replace("nothing changed", "nothing would change")
    twice, outcome = await ask(astore, config, home, "edit_file", {"path": "a.txt", "old": "alpha", "new": "x"},
                               approve=True)
    assert twice.preview == outcome.result.text == (
        "a.txt: the old text occurs 2 times; give more surrounding text so that it matches exactly once")
    assert (ws / "a.txt").read_text() == "alpha\nbeta\nalpha\n"


async def test_escape_sequences_in_the_file_are_shown_escaped_everywhere(astore: AsyncStore, config: Config,
                                                                         home: Path, ws: Path) -> None:
    (ws / "evil.txt").write_text("plain\n\x1b[2J\x1b]0;owned\x07 wiped\n")
    approval, _ = await ask(astore, config, home, "write_file",
                            {"path": "evil.txt", "content": "plain\n\u202eflipped\r overwritten\n"}, approve=False)
    assert approval.preview is not None and "\x1b[2J" in approval.preview  # stored raw: the file's bytes
    lines = approval_lines(approval, 0.0)
    rendered = "\n".join(lines[lines.index("  would change:"):])  # the other lines are escaped by the printer
    assert "\x1b" not in rendered and "\x07" not in rendered and "\u202e" not in rendered and "\r" not in rendered
    assert "    -\\x1b[2J\\x1b]0;owned\\x07 wiped" in rendered
    assert "    +\\u202eflipped\\x0d overwritten" in rendered


async def test_the_cli_listing_shows_the_diff_terminal_safe(astore: AsyncStore, config: Config, home: Path,
                                                            ws: Path) -> None:
    (ws / "evil.txt").write_text("title\n\x1b]0;owned\x07\n")
    asked: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()

    async def record(approval: Approval) -> None:
        asked.set_result(approval)

    call = asyncio.create_task(Gate(astore, config, home).call(
        "dev", "edit_file", {"path": "evil.txt", "old": "\x1b]0;owned\x07", "new": "fine"}, on_ask=record))
    approval = await asyncio.wait_for(asked, 20)
    try:
        listing = await asyncio.to_thread(ok, home, "approvals")
    finally:
        await astore.write(r.decide_approval, OWNER, approval.id, False)
        await asyncio.wait_for(call, 20)
    assert "\x1b" not in listing and "\x07" not in listing
    assert "  would change:\n    --- a/evil.txt\n    +++ b/evil.txt\n" in listing
    assert "    -\\x1b]0;owned\\x07\n    +fine\n" in listing


async def test_the_cockpit_modal_shows_the_diff_terminal_safe(astore: AsyncStore, config: Config, home: Path,
                                                              ws: Path) -> None:
    (ws / "evil.txt").write_text("one\n\x1b[31mred\n")
    approval, _ = await ask(astore, config, home, "write_file", {"path": "evil.txt", "content": "one\ntwo\n"},
                            approve=False)

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(ApprovalModal(approval, grace_s=0.0))

    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        while not isinstance(app.screen, ApprovalModal):
            await pilot.pause(0.05)
        shown = str(app.screen.query_one("#approval-diff", Static).render())
        keys = str(app.screen.query_one(".approval-keys", Static).render())
    assert shown.splitlines() == ["--- a/evil.txt", "+++ b/evil.txt", "@@ -1,2 +1,2 @@", " one",
                                  "-\\x1b[31mred", "+two"]
    assert "y once" in keys


@pytest.mark.parametrize(("before", "after"), [
    ("".join(f"{i}\n" for i in range(100)), "".join(f"{i}\n" for i in range(100) if i not in (3, 50, 97))),
    ("".join(f"{i}\n" for i in range(100)), "".join(f"{i}\n" if i % 30 else "changed\n" for i in range(100))),
    ("a\nb\n", "x\na\nb\ny\n"),
])
def test_the_trimmed_diff_is_difflibs_diff_of_the_whole_files(before: str, after: str) -> None:
    whole = difflib.unified_diff(before.splitlines(True), after.splitlines(True), "a/f", "b/f")
    assert unified("f", before, after, new=False) == "".join(whole).rstrip("\n")


def test_a_long_diff_is_capped_with_the_count_left_out(ws: Path, home: Path) -> None:
    (ws / "big.txt").write_text("".join(f"old {i}\n" for i in range(500)))
    preview = write_preview("write_file", {"path": "big.txt", "content": "".join(f"new {i}\n" for i in range(500))},
                            ws, home)
    assert preview is not None
    lines = preview.splitlines()
    assert len(lines) == MAX_PREVIEW_LINES + 1 and len(preview) <= MAX_PREVIEW_CHARS + 40
    full = 3 + 1000  # two labels, one hunk header, 500 removed and 500 added
    assert lines[-1] == f"… {full - MAX_PREVIEW_LINES} more lines"
    wide = write_preview("write_file", {"path": "wide.txt", "content": "x" * 300 + "\n" + "y" * 300 + "\n"
                                        + "z" * 5000 + "\n"}, ws, home)
    assert wide is not None and len(wide) <= MAX_PREVIEW_CHARS + 40
    assert wide.endswith("… 1 more line") and "+" + "y" * 300 in wide


@pytest.mark.timeout(20)
def test_too_many_changes_are_described_not_compared(ws: Path, home: Path) -> None:
    """Every other line of 25k changed took difflib 52 s: above MAX_DIFF_LINES one line says so."""
    n = MAX_DIFF_LINES * 4
    (ws / "big.txt").write_text("".join(f"line {i} of the file\n" for i in range(n)))
    changed = "".join("x\n" if i % 2 == 0 and 0 < i < n - 1 else f"line {i} of the file\n" for i in range(n))
    note = write_preview("write_file", {"path": "big.txt", "content": changed}, ws, home)
    assert note == f"big.txt: {n - 3} lines from line 3 replaced by {n - 3} lines (too many changes to show a diff)"


@pytest.mark.parametrize(("tool", "arguments"), [
    ("write_file", {"path": "../outside.txt", "content": "x"}),  # outside the workspace
    ("write_file", {"path": "a.txt"}),  # bad arguments: the tool refuses before any file
    ("edit_file", {"path": "a.txt", "old": "x", "new": "y", "extra": 1}),
    ("write_file", "not an object"),
    ("read_file", {"path": "a.txt"}),  # no preview for a tool that writes nothing
])
def test_no_preview_where_the_tool_would_touch_no_file(ws: Path, home: Path, tool: str, arguments: Any) -> None:
    assert write_preview(tool, arguments, ws, home) is None


def test_an_unreadable_path_is_a_note_not_an_exception(ws: Path, home: Path) -> None:
    (ws / "dir").mkdir()
    note = write_preview("edit_file", {"path": "dir", "old": "x", "new": "y"}, ws, home)
    assert note is not None and note.startswith("dir: cannot be read") and "\n" not in note
    gone = write_preview("edit_file", {"path": "gone.txt", "old": "x", "new": "y"}, ws, home)
    assert gone == "gone.txt: no such file; nothing would change"
    assert write_preview("write_file", {"path": "same.txt", "content": ""}, ws, home) == "same.txt: no change"


@pytest.mark.parametrize(("text", "old", "new", "expected"), [
    ("a\nb\nc\n", "b\n", "B\n", "a\nB\nc\n"),
    ("a\nb\nc\n", "b", "", "a\nc\n"),  # a whole line removed takes its line break along
    ("ab", "b", "", "a"),
])
def test_edited_text_is_the_edit(text: str, old: str, new: str, expected: str) -> None:
    assert edited_text("f", text, old, new) == expected


@pytest.mark.parametrize(("old", "why"), [("", "`old` is empty"), ("q", "not found"), ("a", "occurs 2 times")])
def test_edited_text_refuses_as_the_tool_does(old: str, why: str) -> None:
    with pytest.raises(ToolError, match=why):
        edited_text("f", "a\na\n", old, "x")


@pytest.mark.parametrize(("text", "addition", "expected"), [
    ("", "x", "x\n"), ("a\n", "x", "a\nx\n"), ("a", "x\n", "a\nx\n"),
])
def test_appended_text_is_the_append(text: str, addition: str, expected: str) -> None:
    assert appended_text(text, addition) == expected

