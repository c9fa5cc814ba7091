"""One way in for a request: the composer and `agentdeck send` read `@agent …` alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.errors import InvalidArgument
from agents.intake import TITLE_WIDTH, read_request, title_of

REPO = Path(__file__).resolve().parent.parent
CREW = ["lead", "dev", "review", "ops", "scribe"]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "--home", str(home), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_leading_mention_addresses_the_request_and_leaves_the_title() -> None:
    req = read_request("@dev fix the build\nit fails on main", CREW)
    assert (req.owner, req.title, req.body) == ("dev", "fix the build", "@dev fix the build\nit fails on main")
    assert read_request("what changed this week?", CREW).owner is None  # the router picks
    # A mention inside the text is the router's business, not an address.
    assert read_request("ask @ops about the disk", CREW).owner is None
    assert read_request("@dev", CREW).title == "@dev"  # nothing after it: the text is the title


def test_an_unknown_or_conflicting_address_is_an_error_naming_the_agents() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown agent 'devv' \(agents: lead, dev, review, ops, scribe\)"):
        read_request("@devv fix it", CREW)
    with pytest.raises(InvalidArgument, match="addressed to both ops and @dev"):
        read_request("@dev fix it", CREW, to="ops")
    assert read_request("@dev fix it", CREW, to="dev").owner == "dev"
    with pytest.raises(InvalidArgument, match="empty"):
        read_request("   \n ", CREW)


def test_titles_are_the_first_line_shortened() -> None:
    assert title_of("\n\n  first   line \nsecond") == "first line"
    long = title_of("x" * 1000)
    assert len(long) == TITLE_WIDTH and long.endswith("…")


@pytest.mark.timeout(120)
def test_send_reads_a_mention_as_the_cockpit_does(tmp_path: Path) -> None:
    """The CLI used to keep `@dev` in the title and leave an unknown `@devv` to the
    router (which gave it to lead); the cockpit refused it. Now both refuse it."""
    sent = cli(tmp_path, "send", "@dev fix the build")
    assert sent.returncode == 0, sent.stderr
    task = json.loads(cli(tmp_path, "tasks", "--json").stdout)[0]
    assert (task["owner"], task["title"]) == ("dev", "fix the build")
    bad = cli(tmp_path, "send", "@devv fix the build")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "agentdeck: unknown agent 'devv' (agents: lead, dev, review, ops, scribe)"]
    assert len(json.loads(cli(tmp_path, "tasks", "--json").stdout)) == 1  # nothing was created
