"""The path half of the bypass suite: every trick is decided on the real location, by
components; nothing is ever written outside the workspace; a symlink swapped in after the
decision does not redirect the write."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from helpers import AGENTS, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.config import default_config
from agents.gate import config_rules, make_policy
from agents.policy.decide import Policy, decide
from agents.policy.paths import resolve_path
from agents.policy.rules import Rule
from agents.store import AsyncStore
from agents.tools import TOOLS, fs, invoke
from agents.tools.base import AgentStore, ToolContext


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A workspace with a sibling whose name starts with the workspace's, an outside
    directory, agentdeck's home inside the workspace, and a repo's .git."""
    ws = tmp_path / "app"
    outside = tmp_path / "outside"
    sibling = tmp_path / "app-evil"
    for d in (ws, outside, sibling, ws / "src", ws / ".git" / "hooks"):
        d.mkdir(parents=True)
    (outside / "secret.txt").write_text("outside secret")
    (ws / "src" / "main.py").write_text("print('hi')\n")
    (ws / "link-out").symlink_to(outside)
    (ws / "link-file-out").symlink_to(outside / "secret.txt")
    (ws / "loop-a").symlink_to(ws / "loop-b")
    (ws / "loop-b").symlink_to(ws / "loop-a")
    (ws / "link-in").symlink_to(ws / "src")
    return {"ws": ws, "outside": outside, "sibling": sibling, "home": ws / ".agentdeck"}


def policy_for(world: dict[str, Path], *extra: Rule) -> Policy:
    config = default_config()
    config.workspace = str(world["ws"])
    base = make_policy(config, world["home"], config_rules(config))
    writes = Rule(id=1, agent="dev", tool="write_file", pattern="*", decision="allow", source="user")
    return Policy(workspace=base.workspace, home=base.home, allowlists=base.allowlists,
                  rules=(*base.rules, writes, *extra), shell_sandboxed=True)


# (path, expected decision for dev's write_file with a `*` allow rule, what it is)
PATHS = [
    ("src/new.py", "allow", "a new file inside"),
    ("src/../src/x.py", "allow", ".. that stays inside"),
    ("link-in/x.py", "allow", "a symlink to inside"),
    ("../outside/x", "deny", ".. out of the workspace"),
    ("/etc/passwd", "deny", "an absolute path outside"),
    ("link-out/x", "deny", "through a symlink to outside"),
    ("link-file-out", "deny", "a symlink to a file outside"),
    ("loop-a/x", "deny", "a symlink loop"),
    ("../app-evil/x", "deny", "a sibling whose name starts with the workspace's"),
    ("~/x", "deny", "~ is the user's home"),
    ("~root/.bashrc", "deny", "~user"),
    (".agentdeck/agentdeck.db", "deny", "agentdeck's database, inside the workspace"),
    (".agentdeck/config.toml", "deny", "agentdeck's config"),
    (".agentdeck/../.agentdeck/x", "deny", "agentdeck's home reached with .."),
    (".git/hooks/pre-commit", "ask", "a git hook runs code"),
    (".git/config", "ask", "git config runs code (core.fsmonitor, pagers)"),
    ("src/.git/x", "ask", "a nested .git"),
    ("", "deny", "empty"),
    ("src/\x00x", "deny", "NUL"),
]


@pytest.mark.parametrize(("path", "expected", "what"), PATHS, ids=[p[2] for p in PATHS])
def test_path_bypasses_are_decided_on_the_real_location(world: dict[str, Path], path: str, expected: str,
                                                        what: str) -> None:
    (world["home"]).mkdir(exist_ok=True)
    d = decide(policy_for(world), "dev", "write_file", {"path": path, "content": "x"})
    assert d.decision == expected, (what, d)


@pytest.mark.parametrize(("path", "expected", "what"), PATHS, ids=[p[2] for p in PATHS])
def test_nothing_is_ever_written_outside(world: dict[str, Path], path: str, expected: str, what: str) -> None:
    """Run write_file for real on each path (as if approved): outside stays untouched."""
    world["home"].mkdir(exist_ok=True)
    before = {p: p.read_bytes() for p in world["outside"].rglob("*") if p.is_file()}
    ctx = ToolContext(agent="dev", workspace=world["ws"], home=world["home"], store=None)  # type: ignore[arg-type]
    result, _ = asyncio.run(invoke(TOOLS["write_file"], ctx, {"path": path, "content": "pwned"}))
    if expected == "deny":
        assert result.status == "error", (what, result)
    after = {p: p.read_bytes() for p in world["outside"].rglob("*") if p.is_file()}
    assert after == before
    assert not list(world["sibling"].iterdir())
    assert not (world["home"] / "agentdeck.db").exists()


def test_reads_follow_the_same_rules(world: dict[str, Path]) -> None:
    p = policy_for(world)
    assert decide(p, "dev", "read_file", {"path": "src/main.py"}).decision == "allow"
    for path in ("link-file-out", "../outside/secret.txt", "/etc/shadow", "~/.ssh/id_rsa"):
        assert decide(p, "dev", "read_file", {"path": path}).decision == "deny", path


def test_resolved_is_the_absolute_real_path(world: dict[str, Path]) -> None:
    d = decide(policy_for(world), "dev", "write_file", {"path": "link-in/../src/y.py", "content": ""})
    assert d.resolved == str((world["ws"] / "src" / "y.py").resolve())
    assert d.always_rule == "src/y.py"


COMPONENTS = st.lists(st.sampled_from(["src", "..", ".", "link-out", "link-in", "loop-a", "outside",
                                       "app", "app-evil", "x", ".git", "~", "/", "link-file-out"]),
                      min_size=1, max_size=7)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(COMPONENTS)
def test_property_never_allow_a_path_whose_real_target_is_outside(world: dict[str, Path],
                                                                  parts: list[str]) -> None:
    raw = "/".join(parts).replace("//", "/")
    d = decide(policy_for(world), "dev", "write_file", {"path": raw, "content": ""})
    real = Path(os.path.realpath(Path(os.path.expanduser(raw)) if os.path.isabs(os.path.expanduser(raw))
                                 else world["ws"] / raw))
    inside = real.is_relative_to(world["ws"].resolve()) and not real.is_relative_to(world["home"].resolve())
    if not inside:
        assert d.decision == "deny", (raw, real, d)


def test_a_directory_swapped_for_a_symlink_after_the_decision_is_not_followed(world: dict[str, Path]) -> None:
    ws, outside = world["ws"], world["outside"]
    (ws / "build").mkdir()
    d = decide(policy_for(world), "dev", "write_file", {"path": "build/out.txt", "content": "x"})
    assert d.decision == "allow"
    where = resolve_path("build/out.txt", ws, world["home"])
    # The race: between the decision and the write, build/ becomes a link to outside.
    (ws / "build").rmdir()
    (ws / "build").symlink_to(outside)
    with pytest.raises(OSError, match="symlinks are not followed"):
        fs.write_bytes(ws, where.relative, b"redirected?")
    assert not (outside / "out.txt").exists()


def test_a_file_swapped_for_a_symlink_is_replaced_not_written_through(world: dict[str, Path]) -> None:
    ws, outside = world["ws"], world["outside"]
    (ws / "notes.txt").write_text("mine")
    where = resolve_path("notes.txt", ws, world["home"])
    (ws / "notes.txt").unlink()
    (ws / "notes.txt").symlink_to(outside / "secret.txt")
    fs.write_bytes(ws, where.relative, b"new notes")
    assert (outside / "secret.txt").read_text() == "outside secret"
    assert not (ws / "notes.txt").is_symlink() and (ws / "notes.txt").read_text() == "new notes"
    with pytest.raises(OSError, match="symlink"):
        (ws / "n2").symlink_to(outside / "secret.txt")
        fs.read_bytes(ws, "n2", 100)


async def test_tools_write_only_as_their_agent(tmp_path: Path) -> None:
    """A tool has no actor argument; through its AgentStore, the reducers refuse to let
    one agent change another agent's rows."""
    from agents.store import reducers as r

    store = await AsyncStore(tmp_path / "db.sqlite", AGENTS).open()
    try:
        task = await store.write(r.create_task, "owner", "ops only", owner="ops")
        dev = AgentStore(store, "dev")
        ctx = ToolContext(agent="dev", workspace=tmp_path, home=tmp_path / "h", store=dev, task_id=task.id)
        result, _ = await invoke(TOOLS["delegate"], ctx, {"to": "review", "title": "steal"})
        assert result.status == "error" and "may not add subtasks" in result.text
        result, _ = await invoke(TOOLS["memory_write"], ctx, {"content": "x", "importance": 9})
        assert result.status == "error" and "importance" in result.text
        with pytest.raises(TypeError):
            await invoke(TOOLS["send_message"], ctx, {"to": "lead", "text": "hi"}, actor="owner")  # type: ignore[call-arg]
    finally:
        await store.close()
