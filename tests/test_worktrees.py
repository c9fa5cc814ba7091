"""Worktrees for real: a workspace that is a git repository, dev's tasks each in a git
worktree of their own (made by the real gate), two of them editing the same file at once,
then `agentdeck merge` of one and the conflict of the other; and the crew's result
naming the branch."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import finished, ok, one_line_error, reflect, require_bwrap, run
from scripted_backend import ScriptedBackend, queued

from agents.checkpoints.worktrees import Worktrees
from agents.config import Config, parse_config
from agents.gate import Gate
from agents.protocol import OWNER, Approval
from agents.runtime import Host
from agents.store import AsyncStore, queries
from agents.store import reducers as r

RULES = "".join(f'[[rules]]\nagent = "dev"\ntool = "{t}"\npattern = "**"\ndecision = "allow"\n\n'
                for t in ("write_file", "edit_file", "read_file"))


def git(ws: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=ws, env=env, check=True, capture_output=True, text=True,
                          timeout=30).stdout


@pytest.fixture
def repo(ws: Path) -> Path:
    (ws / "a.txt").write_text("one\ntwo\nthree\n")
    (ws / "b.txt").write_text("bee\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "start")
    return ws


@pytest.fixture
def config(home: Path, repo: Path) -> Config:
    text = f'workspace = "{repo}"\nsandbox = "off"\n{RULES}'
    (home / "config.toml").write_text(text)
    config = parse_config(text)
    assert config.agents["dev"].isolation == "worktree"  # dev's default in a repository
    return config


@pytest.mark.timeout(120)
async def test_two_tasks_at_once_edit_one_file_then_one_merges_and_the_other_conflicts(
        astore: AsyncStore, config: Config, home: Path, repo: Path) -> None:
    gate = Gate(astore, config, home)
    first = await astore.write(r.create_task, OWNER, "first edit", owner="dev")
    second = await astore.write(r.create_task, OWNER, "second edit", owner="dev")

    async def edit(task_id: int, new: str) -> str:
        outcome = await gate.call("dev", "edit_file", {"path": "a.txt", "old": "two", "new": new}, task_id=task_id)
        return outcome.result.status

    assert await asyncio.gather(edit(first.id, "TWO by first"), edit(second.id, "TWO by second")) == ["ok", "ok"]
    trees = Worktrees(home, repo)
    assert (repo / "a.txt").read_text() == "one\ntwo\nthree\n"  # the person's checkout untouched
    assert (trees.path_for(first.id) / "a.txt").read_text() == "one\nTWO by first\nthree\n"
    assert (trees.path_for(second.id) / "a.txt").read_text() == "one\nTWO by second\nthree\n"
    where = trees.path_for(first.id)
    assert not where.is_relative_to(repo) and not where.is_relative_to(home)  # beside both

    # What the runner does when each ends done: commit the worktree on its branch.
    for task in (first, second):
        committed = await trees.commit(task.id, f"agentdeck task {task.id}", "dev")
        assert committed is not None and (committed.files, committed.added, committed.removed) == (1, 1, 1)
        await astore.write(r.cancel_task, OWNER, task.id)
    changes = json.loads(ok(home, "changes", str(second.id), "--json"))
    assert [f["path"] for f in changes["files"]] == ["a.txt"]
    assert changes["workspaces"] == [str(trees.path_for(second.id))]

    merged = ok(home, "merge", str(first.id))
    assert f"merged agentdeck/task-{first.id} (1 file(s))" in merged
    assert (repo / "a.txt").read_text() == "one\nTWO by first\nthree\n"
    assert not trees.path_for(first.id).exists()
    assert f"agentdeck/task-{first.id}" not in git(repo, "branch", "--list")
    gone = run(home, "undo", str(first.id))  # its worktree is gone: never recreated by an undo
    assert gone.returncode != 0 and "which is gone (merged or cleaned)" in one_line_error(gone)
    assert not trees.path_for(first.id).exists()

    head = git(repo, "rev-parse", "HEAD")
    refused = run(home, "merge", str(second.id))
    assert refused.returncode != 0
    assert "would conflict in: a.txt; nothing was changed" in one_line_error(refused)
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""
    assert f"agentdeck/task-{second.id}" in git(repo, "branch", "--list")  # kept for the person

    shown = ok(home, "merge", str(second.id), "--diff")
    assert "+TWO by second" in shown


@pytest.mark.timeout(120)
async def test_a_task_in_a_worktree_ends_naming_its_branch(db_path: Path, home: Path, repo: Path) -> None:
    text = f'workspace = "{repo}"\nsandbox = "off"\n{RULES}'
    config = parse_config(text)
    # Triage is by rule (the person gave dev the task) and the first step reads the file
    # the task names (rules first): the model's steps are the edit and the answer.
    outputs = {"dev": ['{"tool": "edit_file", "arguments": {"path": "b.txt", "old": "bee", "new": "BEE"}}',
                       '{"final": "b.txt now says BEE"}', reflect("edits go through edit_file")]}
    backend = ScriptedBackend(queued(outputs))
    host = Host(db_path, config, backend=backend, approvals="deny", crew=True)  # type: ignore[arg-type]
    async with host:
        task = await host.store.write(r.create_task, OWNER, "make b.txt say BEE", owner="dev")
        done = await finished(host, task.id)
    assert done.status == "done", done.result
    assert f"[branch agentdeck/task-{task.id}: 1 file(s) changed, +1 -1; `agentdeck merge {task.id}`" in done.result
    assert (repo / "b.txt").read_text() == "bee\n"
    assert git(repo, "show", f"agentdeck/task-{task.id}:b.txt") == "BEE\n"
    assert "b.txt" in git(repo, "diff", "--name-only", f"main...agentdeck/task-{task.id}")


async def test_an_ended_tasks_worktree_is_cleaned_after_the_keep_days(home: Path, repo: Path) -> None:
    trees = Worktrees(home, repo, keep_days=1)
    for task_id in (5, 6, 7):
        await trees.ensure(task_id)
    now = time.time()
    removed = await trees.clean({5: now - 2 * 86_400, 6: now - 3600}, now=now)  # 7: still running
    assert removed == [5]
    assert trees.worktree_tasks() == [6, 7]
    assert "agentdeck/task-5" in git(repo, "branch", "--list")  # the work is kept on its branch


async def test_a_workspace_without_a_commit_fails_the_call_saying_why(
        astore: AsyncStore, home: Path, ws: Path) -> None:
    git(ws, "init", "-q")
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n{RULES}')
    task = await astore.write(r.create_task, OWNER, "write", owner="dev")
    outcome = await Gate(astore, config, home).call("dev", "write_file", {"path": "x", "content": "x"},
                                                    task_id=task.id)
    assert outcome.result.status == "error"
    assert "worktree could not be made" in outcome.result.text and "no commit yet" in outcome.result.text
    assert not (ws / "x").exists()


@pytest.mark.timeout(120)
async def test_a_shell_command_in_bubblewrap_changes_the_worktree_not_the_checkout(
        astore: AsyncStore, home: Path, repo: Path) -> None:
    require_bwrap("shell commands")
    config = parse_config(f'workspace = "{repo}"\n{RULES}')
    gate = Gate(astore, config, home)
    task = await astore.write(r.create_task, OWNER, "shell edit", owner="dev")

    async def approve(approval: Approval) -> None:  # `sed -i` always asks
        await astore.write(r.decide_approval, OWNER, approval.id, True)

    outcome = await gate.call("dev", "run_shell", {"command": "sed -i s/bee/BEE/ b.txt"}, task_id=task.id,
                              on_ask=approve)
    assert outcome.result.status == "ok", outcome.result.text
    assert (Worktrees(home, repo).path_for(task.id) / "b.txt").read_text() == "BEE\n"
    assert (repo / "b.txt").read_text() == "bee\n"
    await astore.write(r.cancel_task, OWNER, task.id)
    changes = json.loads(ok(home, "changes", str(task.id), "--json"))
    assert [(f["path"], f["status"]) for f in changes["files"]] == [("b.txt", "M")]


async def test_a_delegation_naming_a_branch_takes_its_diff_along(
        astore: AsyncStore, config: Config, home: Path, repo: Path) -> None:
    """lead hands review "check agentdeck/task-N" (as dev's result names it): review's task
    carries the branch's diff, so it reads the change itself."""
    gate = Gate(astore, config, home)
    work = await astore.write(r.create_task, OWNER, "edit b", owner="dev")
    await gate.call("dev", "edit_file", {"path": "b.txt", "old": "bee", "new": "BEE"}, task_id=work.id)
    await Worktrees(home, repo).commit(work.id, "edit b", "dev")
    lead = await astore.write(r.create_task, OWNER, "get it reviewed", owner="lead")

    async def approve(approval: Approval) -> None:  # this config's rules leave delegate asking
        await astore.write(r.decide_approval, OWNER, approval.id, True)

    outcome = await gate.call("lead", "delegate", {"to": "review", "title": f"review agentdeck/task-{work.id}"},
                              task_id=lead.id, on_ask=approve)
    assert outcome.result.status == "ok", outcome.result.text
    [child] = [t for t in await astore.read(queries.tasks, owner="review")]
    assert f"The diff of agentdeck/task-{work.id}" in child.body
    assert "-bee" in child.body and "+BEE" in child.body
