"""Grounding: an answer rests on this task's tool results, and a claimed change was made.

The checks themselves are plain functions (first half); the crew applies them with a
scripted model whose outputs are the confident wrong answers small models were measured
giving (second half): each is refused and told to the model, or fails the task, and each
lever off lets the wrong answer through again — which is what `--ablate` measures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psutil
import pytest
from scripted_backend import ScriptedBackend, ScriptRequest, queued

from agents.config import RuleConfig, parse_config
from agents.crew import grounding
from agents.crew.harness import DEFAULT, Harness
from agents.protocol import OWNER, AgentStepped, AgentTriaged, Task
from agents.runtime import Host
from agents.store import Store, queries
from agents.store import reducers as r


def task(title: str, body: str = "") -> Task:
    return Task(id=1, parent_id=None, job_id=1, owner="dev", created_by=OWNER, title=title, body=body,
                status="active", priority=1, result=None, attempts=0, deadline=None, created_at=0.0,
                updated_at=0.0)


DEV = ["read_file", "write_file", "edit_file", "list_dir", "search_files", "run_shell", "send_message",
       "calculate"]
OPS = ["system_health", "list_processes", "run_shell", "send_message", "calculate"]
LEAD = ["delegate", "send_message", "read_tasks", "memory_search", "read_file", "calculate"]


# --- the checks ---


@pytest.mark.parametrize(("title", "question"), [
    ("Which port is set in settings.ini?", True),
    ("How many files are in the workspace?", True),
    ("What is the sum of the numbers in numbers.txt?", True),
    ("In settings.ini, change the port from 8080 to 9090.", False),
    ("Create notes.txt containing hello", False),
    ("Can you fix the typo in guide.txt?", False),  # a request phrased as a question changes things
])
def test_a_question_is_told_from_a_request_for_a_change(title: str, question: bool) -> None:
    assert grounding.is_question(task(title)) is question


def test_evidence_tools_are_the_agents_own_tools_for_what_the_task_is_about() -> None:
    assert grounding.evidence_tools(task("How full is the disk?"), OPS) == {"system_health", "list_processes",
                                                                             "run_shell"}
    assert grounding.evidence_tools(task("Which port is set in settings.ini?"), DEV) == {
        "read_file", "list_dir", "search_files", "run_shell"}
    assert grounding.evidence_tools(task("Which file in the workspace is the largest?"), DEV) == {
        "list_dir", "search_files", "run_shell", "read_file"}
    assert {"write_file", "edit_file"} <= grounding.evidence_tools(task("Create notes.txt containing hello"), DEV)
    # lead cannot look at the machine, but can hand the looking on
    assert grounding.evidence_tools(task("How full is the disk?"), LEAD) == {"delegate"}
    # nothing to look at: no evidence needed (a haiku, a plan, a greeting)
    assert grounding.evidence_tools(task("write a haiku about tea"), DEV) == set()
    assert grounding.evidence_tools(task("tidy up"), OPS) == set()


def test_step_one_hands_on_what_the_agent_cannot_look_at_itself() -> None:
    both = task("Tell me how many files are in the workspace and how many CPU cores this machine has.")
    assert grounding.first_look(both, LEAD) == {"delegate"}  # lead cannot count cores: it delegates
    assert grounding.first_look(both, DEV) == {"list_dir", "search_files", "run_shell", "read_file"}
    assert grounding.uncovered(both, LEAD) == {"machine": grounding.MACHINE_TOOLS,
                                               "the workspace": grounding.LISTING_TOOLS}
    assert grounding.first_look(task("Which port is set in settings.ini?"), LEAD) == {"read_file"}


@pytest.mark.parametrize(("answer", "loose"), [
    ("The disk is 43% full.", []),  # 43.4 in the result, rounded as a person would
    ("The disk is 43.4% full, 12.3 GiB free.", []),
    ("The sum is 18.", ["18"]),  # 3 + 5 + 9 is 17: the figure was made up
    ("notes2.txt has v1.2 in it", []),  # digits inside words and versions are not figures
    ("The port is 8080.", []),  # the task's own words count
    ("1,5 GiB", []),  # a decimal comma is the same figure
])
def test_a_figure_is_grounded_when_a_result_or_the_task_shows_it(answer: str, loose: list[str]) -> None:
    evidence = ["disk: 50.1 GiB used of 62.4 GiB (43.4%), 12.34 GiB free; 1.5 GiB swap",
                "numbers.txt: 3\n5\n9", "Which port, 8080 or 9090?"]
    assert grounding.ungrounded_numbers(answer, evidence) == loose


def test_only_a_task_that_asks_for_a_figure_holds_its_figures_to_the_results() -> None:
    assert grounding.asks_for_figures(task("How many data rows does cities.csv have?"))
    assert grounding.asks_for_figures(task("What is the sum of the numbers in numbers.txt?"))
    assert grounding.asks_for_figures(task("How full is the disk? Give the percentage."))
    # a reviewer points at line 12 without a tool having printed "12"
    assert not grounding.asks_for_figures(task("Review change.diff: which line has a bug?"))


def test_a_promise_to_hand_on_is_recognised() -> None:
    assert grounding.only_delegates("I will delegate this to dev.")
    assert grounding.only_delegates("Delegating this to lead")
    assert not grounding.only_delegates("dev found 3 files; ops counted 2 cores")


def test_a_change_is_verified_by_reading_the_file_back(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("port = 9090\n")
    assert grounding.verify_change(tmp_path, "write_file", "a.txt", "port = 9090\n") == ""
    assert "does not hold what was written" in grounding.verify_change(tmp_path, "write_file", "a.txt", "x")
    assert grounding.verify_change(tmp_path, "edit_file", "a.txt", "9090") == ""
    assert "does not contain the new text" in grounding.verify_change(tmp_path, "edit_file", "a.txt", "7070")
    assert "cannot be read back" in grounding.verify_change(tmp_path, "write_file", "gone.txt", "x")


# --- the crew with the checks, on a scripted model ---

REFLECT = '{"outcome": "success", "lesson": "", "importance": 1, "tags": []}'
WRITES = [RuleConfig(agent="dev", tool=t, pattern="*", decision="allow")
          for t in ("write_file", "edit_file", "append_file")]


def crew(tmp_path: Path, outputs: dict[str, list[str]], harness: Harness = DEFAULT,
         extra: str = "") -> tuple[Host, ScriptedBackend, Path]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\nschedules = []\n{extra}')
    config.rules = [*config.rules, *WRITES]
    backend = ScriptedBackend(queued(outputs))
    host = Host(tmp_path / "home" / "agentdeck.db", config, backend=backend, crew=True,  # type: ignore[arg-type]
                harness=harness)
    return host, backend, ws


async def run_to_end(host: Host, title: str, owner: str, created_by: str = OWNER, within: float = 30.0) -> Task:
    created = await host.store.write(r.create_task, created_by, title, owner=owner)
    deadline = time.monotonic() + within
    while True:
        now = await host.store.read(queries.task, created.id)
        if now is not None and now.status in ("done", "failed"):
            return now
        assert time.monotonic() < deadline, f"task not ended in time: {now}"
        await asyncio.sleep(0.02)


async def run_one(tmp_path: Path, outputs: dict[str, list[str]], title: str, files: dict[str, str],
                  harness: Harness = DEFAULT) -> tuple[Task, ScriptedBackend, Path, list[tuple[str | None, str]]]:
    """One task for dev in a workspace holding `files`, run to its end: (it, the backend,
    the workspace, its steps)."""
    host, backend, ws = crew(tmp_path, outputs, harness)
    for name, text in files.items():
        (ws / name).write_text(text)
    async with host:
        ended = await run_to_end(host, title, "dev")
        steps = await steps_of(host, ended.id)
    return ended, backend, ws, steps


async def steps_of(host: Host, task_id: int) -> list[tuple[str | None, str]]:
    events = await host.store.read(queries.events_after, 0, 10_000)
    return [(e.payload.tool, e.payload.status) for e in events
            if isinstance(e.payload, AgentStepped) and e.payload.task_id == task_id]


def step_requests(backend: ScriptedBackend, agent: str) -> list[ScriptRequest]:
    return [q for q in backend.requests if q.agent == agent and q.schema and "anyOf" in q.schema]


def offers(request: ScriptRequest) -> set[str]:
    """What a step's grammar lets the model say: its tools, and "final"."""
    said: set[str] = set()
    for option in request.schema["anyOf"]:  # type: ignore[index]
        props = option["properties"]
        said.add(props["tool"]["const"] if "tool" in props else "final")
    return said


def call(tool: str, **arguments: object) -> str:
    return json.dumps({"tool": tool, "arguments": arguments})


def final(text: str) -> str:
    return json.dumps({"final": text})


@pytest.mark.timeout(60)
async def test_a_question_cannot_be_answered_before_a_look_and_never_writes(tmp_path: Path) -> None:
    outputs = {"dev": [call("list_dir", path="."), call("read_file", path="settings.ini"),
                       final("The port is 8080."), REFLECT]}
    host, backend, ws = crew(tmp_path, outputs)
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:  # no file named: no rule reads it first, the model must
        ended = await run_to_end(host, "Which port does the server's settings file set?", "dev")
        steps = await steps_of(host, ended.id)
        events = await host.store.read(queries.events_after, 0, 10_000)
    assert (ended.status, ended.result) == ("done", "The port is 8080.")
    [triaged] = [e.payload for e in events if isinstance(e.payload, AgentTriaged)]
    assert (triaged.by, triaged.action) == ("rule", "act")  # the person chose dev; dev's tools can do it
    first, second, third = step_requests(backend, "dev")
    assert offers(first) == {"list_dir", "search_files", "run_shell", "read_file"}  # step 1 may only look
    assert {"write_file", "edit_file"}.isdisjoint(offers(second) | offers(third))  # a question never writes
    assert "final" in offers(second)
    assert steps == [("list_dir", "ok"), ("read_file", "ok"), (None, "final")]


@pytest.mark.timeout(60)
async def test_a_question_for_a_figure_answered_without_one_is_refused(tmp_path: Path) -> None:
    """Measured with Qwen-0.5B: asked how much disk is free, in GiB, it answered "ok"."""
    outputs = {"dev": [final("ok"), final("There are two lines."), REFLECT]}
    ended, backend, _, steps = await run_one(tmp_path, outputs, "How many lines does notes.txt have?",
                                             {"notes.txt": "a\nb\n"})
    assert (ended.status, ended.result) == ("done", "There are two lines.")
    assert steps == [("read_file", "ok"), (None, "refused"), (None, "final")]
    assert "the answer gives none" in step_requests(backend, "dev")[1].messages[-1].content
    assert grounding.gives_a_figure("none failed") and not grounding.gives_a_figure("it is fine")


@pytest.mark.timeout(60)
async def test_a_count_other_than_the_tools_count_of_its_subject_is_refused(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B, both rounds: "The machine has 5 CPU cores." beside
    system_health's "of 2 cores" (a load average rounded to 5 let it through)."""
    cores = psutil.cpu_count()
    outputs = {"ops": [final(f"The machine has {cores + 3} CPU cores."), final(f"It has {cores} cores."), REFLECT]}
    host, backend, _ = crew(tmp_path, outputs)
    async with host:
        ended = await run_to_end(host, "How many CPU cores does this machine have?", "ops")
        steps = await steps_of(host, ended.id)
    assert (ended.status, ended.result) == ("done", f"It has {cores} cores.")
    assert steps == [("system_health", "ok"), (None, "refused"), (None, "final")]
    told = [q.messages[-1].content for q in step_requests(backend, "ops")]
    assert f"the tool results count cores: {cores}, and the answer says {cores + 3}" in told[1]


@pytest.mark.parametrize(("question", "answer", "results", "off"), [
    ("How many files are in the workspace?", "There are 4 files.", ["a\nb\nc\n3 files"], True),
    ("How many files are there?", "3", ["3 files"], False),
    ("How many CPU cores does this machine have?", "13% of 2 cores used, load 2.24", ["of 2 cores"], False),
    ("How many files are larger than 1 KB?", "1", ["3 files"], False),  # a condition: no total answers it
    ("How many data rows does data.csv have?", "5", ["id,x\n1,2\n(5 lines)"], False),  # lines are not rows
    ("How many cores does it have?", "It has many.", ["of 2 cores"], False),  # no count: another check's
])
def test_a_count_is_held_to_the_tools_count_of_the_same_thing(question: str, answer: str, results: list[str],
                                                               off: bool) -> None:
    assert bool(grounding.count_off_its_subject(question, answer, results)) is off


@pytest.mark.timeout(60)
async def test_a_sum_the_model_made_is_refused_and_the_calculator_gives_the_right_one(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B on 17, 25, 8: "the sum is 17" (a figure the file shows, but
    no sum) and "58"; then a calculate over figures it misread."""
    outputs = {"dev": [final("The sum is 17."),  # after the rules' first step read numbers.txt
                       call("calculate", expression="17+52+8"),
                       call("calculate", expression="5+1"),  # measured: small operands made up
                       call("calculate", expression="17+25+8"), final("The sum is 50."), REFLECT]}
    ended, backend, _, steps = await run_one(tmp_path, outputs, "What is the sum of the numbers in numbers.txt?",
                                             {"numbers.txt": "17\n25\n8\n"})
    assert (ended.status, ended.result) == ("done", "The sum is 50.")
    assert steps == [("read_file", "ok"), (None, "refused"), ("calculate", "refused"), ("calculate", "refused"),
                     ("calculate", "ok"), (None, "final")]
    told = [q.messages[-1].content for q in step_requests(backend, "dev")]
    assert "17: no tool computed this in this task; compute it with calculate over the figures" in told[1]
    assert "52: in no tool result of this task" in told[2]
    assert "5: in no tool result of this task" in told[3]  # 1 is a constant a calculation may use


@pytest.mark.timeout(60)
async def test_without_grounded_numbers_the_made_up_sum_ends_done(tmp_path: Path) -> None:
    outputs = {"dev": [call("read_file", path="numbers.txt"), final("The sum is 18."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs, Harness(grounded_numbers=False))
    (ws / "numbers.txt").write_text("3\n5\n9\n")
    async with host:
        ended = await run_to_end(host, "What is the sum of the numbers in numbers.txt?", "dev")
    assert (ended.status, ended.result) == ("done", "The sum is 18.")


@pytest.mark.timeout(60)
async def test_an_existing_file_is_changed_only_after_it_was_read(tmp_path: Path) -> None:
    rewrite = call("write_file", path="settings.ini", content="port = 9090\n")  # from memory: a line lost
    outputs = {"dev": [rewrite, call("read_file", path="settings.ini"),
                       call("edit_file", path="settings.ini", old="8080", new="9090"),
                       final("Changed the port to 9090."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs)
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:  # the file is not named: no rule reads it first
        ended = await run_to_end(host, "In the server's settings file, change the port from 8080 to 9090.", "dev")
        steps = await steps_of(host, ended.id)
    assert ended.status == "done"
    assert steps == [("write_file", "refused"), ("read_file", "ok"), ("edit_file", "ok"), (None, "final")]
    assert (ws / "settings.ini").read_text() == "[server]\nport = 9090\n"  # the header kept


@pytest.mark.timeout(60)
async def test_an_existing_file_is_never_rewritten_whole_even_after_a_read(tmp_path: Path) -> None:
    """Measured: having read CHANGELOG.md, the 1.5B wrote it back whole without its blank
    line and final newline. A part changes through edit_file."""
    outputs = {"dev": [call("write_file", path="CHANGELOG.md", content="# Changelog\n- a\n- b"),
                       call("edit_file", path="CHANGELOG.md", old="- b\n", new="- b\n- c\n"),
                       final("Appended '- c'."), REFLECT]}
    # Without the edit targets, which would not offer write_file here at all.
    host, _, ws = crew(tmp_path, outputs, Harness(edit_targets=False))
    (ws / "CHANGELOG.md").write_text("# Changelog\n\n- a\n- b\n")
    async with host:
        ended = await run_to_end(host, "Append the line '- c' to the end of CHANGELOG.md.", "dev")
        steps = await steps_of(host, ended.id)
    assert ended.status == "done"
    assert steps == [("read_file", "ok"), ("write_file", "refused"), ("edit_file", "ok"), (None, "final")]
    assert (ws / "CHANGELOG.md").read_text() == "# Changelog\n\n- a\n- b\n- c\n"


@pytest.mark.timeout(60)
async def test_a_change_request_answered_without_a_change_is_refused_however_worded(tmp_path: Path) -> None:
    outputs = {"dev": [final("The typo 'teh' is now 'the'."),
                       call("edit_file", path="guide.txt", old="teh", new="the"), final("Done."), REFLECT]}
    # Without the edit targets, which would offer no final answer before the change.
    host, _, ws = crew(tmp_path, outputs, Harness(edit_targets=False))
    (ws / "guide.txt").write_text("run teh tests\n")
    async with host:
        ended = await run_to_end(host, "Fix the typo 'teh' in guide.txt.", "dev")
        steps = await steps_of(host, ended.id)
    assert (ended.status, ended.result) == ("done", "Done.")
    assert steps == [("read_file", "ok"), (None, "refused"), ("edit_file", "ok"), (None, "final")]
    assert (ws / "guide.txt").read_text() == "run the tests\n"


@pytest.mark.timeout(60)
async def test_without_read_before_write_the_blind_rewrite_goes_through(tmp_path: Path) -> None:
    outputs = {"dev": [call("write_file", path="settings.ini", content="port = 9090\n"),
                       final("Changed the port to 9090."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs, Harness(read_before_write=False))
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:
        ended = await run_to_end(host, "In the server's settings file, change the port from 8080 to 9090.", "dev")
    assert ended.status == "done"
    assert (ws / "settings.ini").read_text() == "port = 9090\n"  # the header lost, as measured


@pytest.mark.timeout(60)
async def test_a_claimed_change_never_made_fails_the_task_when_the_steps_run_out(tmp_path: Path) -> None:
    outputs = {"dev": [call("list_dir", path="."), final("I created notes.txt containing hello."),
                       final("Created notes.txt with hello.")]}
    # Without the edit targets, which would offer no final answer before the file is made.
    host, _, ws = crew(tmp_path, outputs, Harness(edit_targets=False), extra="[agents.dev]\nmax_steps = 3\n")
    async with host:
        ended = await run_to_end(host, "Create notes.txt containing hello", "dev")
        steps = await steps_of(host, ended.id)
    assert ended.status == "failed"
    assert "the final answer was refused" in (ended.result or "")
    assert "asks for a change to a file, and none was made and read back" in (ended.result or "")
    assert steps == [("list_dir", "ok"), (None, "refused"), (None, "refused")]
    assert not (ws / "notes.txt").exists()


@pytest.mark.timeout(60)
async def test_without_change_verification_the_claim_ends_done(tmp_path: Path) -> None:
    outputs = {"dev": [call("list_dir", path="."), final("I created notes.txt containing hello."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs, Harness(verify_changes=False, edit_targets=False))
    async with host:
        ended = await run_to_end(host, "Create notes.txt containing hello", "dev")
    assert ended.status == "done" and not (ws / "notes.txt").exists()


@pytest.mark.timeout(60)
async def test_a_task_is_not_handed_back_and_a_promise_to_delegate_is_no_answer(tmp_path: Path) -> None:
    outputs = {"lead": ['{"action": "delegate", "reason": "dev knows", "delegate_to": "dev"}',
                        call("delegate", to="dev", title="plan the release"),
                        final("I will delegate this to dev."),
                        call("read_tasks"),  # after a refused answer, a tool call comes first
                        final("The release needs a date first."), REFLECT]}
    host, backend, _ = crew(tmp_path, outputs)
    async with host:
        ended = await run_to_end(host, "plan the release", "lead", created_by="dev")
        steps = await steps_of(host, ended.id)
        events = await host.store.read(queries.events_after, 0, 10_000)
        tasks = await host.store.read(queries.tasks)
    assert (ended.status, ended.result) == ("done", "The release needs a date first.")
    [triaged] = [e.payload for e in events if isinstance(e.payload, AgentTriaged)]
    assert triaged.action == "act" and "dev gave me this task" in triaged.reason
    assert steps == [("delegate", "refused"), (None, "refused"), ("read_tasks", "ok"), (None, "final")]
    assert [t.id for t in tasks] == [ended.id]  # nothing was handed back
    after_refusal = step_requests(backend, "lead")[2]
    assert "final" not in offers(after_refusal) and "read_tasks" in offers(after_refusal)


@pytest.mark.timeout(60)
async def test_a_refused_answer_cannot_be_sent_again_at_the_next_step(tmp_path: Path) -> None:
    """Measured with Qwen-0.5B and 1.5B: "the sum is 17, 25, and 8" sent seven times over,
    each refused, until the steps ran out; with the lever off the script's repeat is
    refused again and again until the steps run out."""
    outputs = {"dev": [final("The sum is 17, 25 and 8."), call("calculate", expression="17+25+8"),
                       final("The sum is 50."), REFLECT]}
    ended, backend, _, steps = await run_one(tmp_path, outputs, "What is the sum of the numbers in numbers.txt?",
                                             {"numbers.txt": "17\n25\n8\n"})
    assert (ended.status, ended.result) == ("done", "The sum is 50.")
    assert steps == [("read_file", "ok"), (None, "refused"), ("calculate", "ok"), (None, "final")]
    asked = step_requests(backend, "dev")
    assert "final" in offers(asked[0])  # a question: no write tools; no one to tell: no messages
    assert offers(asked[1]) == {"calculate", "read_file", "list_dir", "search_files", "run_shell"}
    assert "final" in offers(asked[2])

    outputs = {"dev": [final("The sum is 17, 25 and 8.")] * 7 + [REFLECT]}  # as measured
    (tmp_path / "off").mkdir()
    host, backend, ws = crew(tmp_path / "off", outputs, Harness(act_after_refusal=False))
    (ws / "numbers.txt").write_text("17\n25\n8\n")
    async with host:
        ended = await run_to_end(host, "What is the sum of the numbers in numbers.txt?", "dev")
        steps = await steps_of(host, ended.id)
    assert ended.status == "failed" and "the final answer was refused" in (ended.result or "")
    assert steps == [("read_file", "ok")] + [(None, "refused")] * 7


@pytest.mark.timeout(60)
async def test_a_parent_waits_for_its_subtasks_and_states_only_what_they_found(tmp_path: Path) -> None:
    outputs = {"lead": [call("delegate", to="dev", title="Which port is set in settings.ini?"),
                        final("dev has it: the port is set."),  # ahead of the work: it waits
                        final("The port is 9999."),  # the combine, wrong: replaced by the result
                        REFLECT],
               "dev": [call("read_file", path="settings.ini"), final("The port is 8080."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs)
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:
        ended = await run_to_end(host, "Find out which port settings.ini sets and tell me", "lead")
        tasks = await host.store.read(queries.tasks)
    [child] = [t for t in tasks if t.parent_id == ended.id]
    assert (child.status, child.result) == ("done", "The port is 8080.")
    assert (ended.status, ended.result) == ("done", "dev: The port is 8080.")


@pytest.mark.timeout(60)
async def test_without_combine_checks_the_parent_ends_ahead_of_its_subtask(tmp_path: Path) -> None:
    outputs = {"lead": [call("delegate", to="dev", title="Which port is set in settings.ini?"),
                        final("dev has it: the port is set."), REFLECT],
               "dev": [call("read_file", path="settings.ini"), final("The port is 8080."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs, Harness(combine_verified=False))
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:
        ended = await run_to_end(host, "Find out which port settings.ini sets and tell me", "lead")
    assert (ended.status, ended.result) == ("done", "dev has it: the port is set.")


def test_no_step_grammar_spells_out_a_string_length() -> None:
    """llama.cpp refused the grammar from calculate's 2000-character bound ("number of rules
    ... exceeds sane defaults") and every ops task failed at step 1; the gate checks lengths."""
    from agents.crew.schemas import step_schema
    from agents.inference.grammar import schema_to_gbnf
    from agents.tools import TOOLS

    schema = step_schema(sorted(TOOLS))
    assert "maxLength" not in json.dumps(schema) and "minLength" not in json.dumps(schema)
    assert max(line.count("(") for line in schema_to_gbnf(schema).splitlines()) < 40


# --- a finding about a diff, and what the crew's records show ---

DIFF = """--- a/users.py
+++ b/users.py
@@ -1,3 +1,3 @@
 def find_user(db, name):
-    rows = db.execute("SELECT * FROM users WHERE name = ?", (name,))
+    rows = db.execute(f"SELECT * FROM users WHERE name = '{name}'")
     return rows.fetchone()
"""


@pytest.mark.parametrize(("answer", "pointed"), [
    ("The bug is in the line `return rows.fetchone()`: check for None.", "`return rows.fetchone()`"),
    ("Line 3 returns nothing useful.", "line 3"),
    ("users.py:2 pastes the name into the SQL: injection.", ""),  # the added line, by number
    ("`f\"SELECT * FROM users WHERE name = '{name}'\"` is injectable.", ""),  # by its code
    ("The change removed the placeholder `?` at line 3.", ""),  # speaks of what was removed
    ("No bugs found.", ""),  # points at nothing: the model's judgement stands
])
def test_a_finding_about_a_diff_must_point_at_a_line_the_change_adds(answer: str, pointed: str) -> None:
    from agents.tools.diffs import changed_lines
    assert grounding.off_the_change(answer, changed_lines(DIFF)) == pointed


def test_asked_which_line_a_finding_must_name_one() -> None:
    """Measured with Qwen-1.5B: "the query is not properly escaped" — the kind, no place."""
    from agents.tools.diffs import changed_lines
    changes = changed_lines(DIFF)
    assert grounding.asks_which_line(task("Review change.diff: which line has a bug?"))
    assert not grounding.asks_which_line(task("Review change.diff"))
    vague = "The SQL query is not properly escaped: injection."
    assert grounding.off_the_change(vague, changes, must_point=True) == "no line named"
    assert grounding.off_the_change(vague, changes) == ""
    assert grounding.off_the_change("No bugs found.", changes, must_point=True) == ""
    assert grounding.off_the_change("users.py:2 is injectable.", changes, must_point=True) == ""


def test_a_clock_time_or_a_date_grounds_no_figure() -> None:
    """Measured: "the backup copied 15 files" was grounded by the log's 15:52:03."""
    log = ["15:52:03 task.status ops task:1 {}", "2026-12-03T10:00:00 backup started"]
    assert grounding.ungrounded_numbers("It copied 15 files.", log) == ["15"]
    assert grounding.ungrounded_numbers("It copied 2026 files on day 3.", log) == ["2026", "3"]
    assert grounding.ungrounded_numbers("It copied 212 files.", [*log, "→ copied 212 files"]) == []


@pytest.mark.timeout(60)
async def test_a_review_pointing_off_the_change_is_told_the_changed_lines(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: the injection on line 2 reported as `return rows.fetchone()`."""
    outputs = {"review": [final("The bug is `return rows.fetchone()`: it may return None."),
                          final("users.py:2 builds the SQL from the name: an injection."), REFLECT]}
    host, backend, ws = crew(tmp_path, outputs)
    (ws / "change.diff").write_text(DIFF)
    async with host:  # the rules read change.diff first: the task names it
        ended = await run_to_end(host, "Review change.diff: which line has a bug?", "review")
        steps = await steps_of(host, ended.id)
    assert (ended.status, ended.result) == ("done", "users.py:2 builds the SQL from the name: an injection.")
    assert steps == [("read_file", "ok"), (None, "refused"), (None, "final")]
    requests = step_requests(backend, "review")
    shown = requests[0].messages[-1].content  # the read, with the changed lines numbered
    assert "users.py:2 + rows = db.execute(f\"SELECT" in shown and "users.py:2 - rows" in shown
    told = requests[1].messages[-1].content
    assert "`return rows.fetchone()`: not a line this change adds; the change adds users.py:2 rows" in told


@pytest.mark.timeout(60)
async def test_without_the_change_check_a_finding_off_the_change_ends_done(tmp_path: Path) -> None:
    outputs = {"review": [final("The bug is `return rows.fetchone()`."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs, Harness(on_the_change=False))
    (ws / "change.diff").write_text(DIFF)
    async with host:
        ended = await run_to_end(host, "Review change.diff: which line has a bug?", "review")
    assert (ended.status, ended.result) == ("done", "The bug is `return rows.fetchone()`.")


@pytest.mark.timeout(60)
async def test_scribe_looks_at_the_task_list_or_the_memory_before_answering(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: from 20 log lines it named the wrong agent and took a count
    from a clock time; asked what was learnt, it read the log and named a task title."""
    outputs = {"scribe": [final("ops rotated the logs."), REFLECT, final("Set TZ=UTC in the test setup."),
                          REFLECT]}
    host, backend, _ = crew(tmp_path, outputs)
    async with host:
        rotate = await host.store.write(r.create_task, OWNER, "Rotate the logs", owner="ops")
        await host.store.write(r.set_task_status, OWNER, rotate.id, "active")
        await host.store.write(r.set_task_status, OWNER, rotate.id, "done", "rotated 3 files")
        await host.store.write(r.write_memory, OWNER, "The date tests fail unless TZ=UTC is set.",
                               kind="reflection", scope="shared", importance=4, agent="dev")
        who = await run_to_end(host, "Which agent rotated the logs?", "scribe")
        learnt = await run_to_end(host, "What did we learn about the failing date tests?", "scribe")
        steps = [await steps_of(host, who.id), await steps_of(host, learnt.id)]
    assert steps == [[("read_tasks", "ok"), (None, "final")], [("memory_search", "ok"), (None, "final")]]
    first, second = step_requests(backend, "scribe")
    assert f"#{rotate.id} [done] ops p1: Rotate the logs → rotated 3 files" in first.messages[-1].content
    assert f"#{who.id} " not in first.messages[-1].content  # the asking task is not listed
    assert "TZ=UTC" in second.messages[-1].content
    # A question records nothing: measured, Qwen-1.5B saved what it read with memory_write
    # and answered that it had written a reflection.
    assert all("memory_write" not in offers(q) for q in (first, second))


@pytest.mark.timeout(60)
async def test_scribe_reads_the_tasks_of_the_status_asked_about_or_those_sharing_its_words(tmp_path: Path) -> None:
    """Measured with Qwen-0.5B: given the whole task list, it answered with its last line
    (the count line, or the asking task itself)."""
    outputs = {"scribe": [final("Task 2 failed: apt could not reach the mirror."), REFLECT,
                          final("ops copied 212 files."), REFLECT, final("3 tasks."), REFLECT]}
    host, backend, _ = crew(tmp_path, outputs)
    history = [("ops", "Back up the photos folder", "done", "copied 212 files to /backup/photos"),
               ("dev", "Update the web server package", "failed", "apt could not reach the package mirror"),
               ("ops", "Rotate the logs", "done", "rotated 3 log files")]
    async with host:
        for owner, title, status, result in history:
            made = await host.store.write(r.create_task, OWNER, title, owner=owner)
            await host.store.write(r.set_task_status, OWNER, made.id, "active")
            await host.store.write(r.set_task_status, OWNER, made.id, status, result)
        for question in ("Which earlier task failed, and why?", "How many files did the photo backup copy?",
                         "Which agent restarted the printer?"):
            await run_to_end(host, question, "scribe")
    failed, photos, unmatched = (q.messages[-1].content for q in step_requests(backend, "scribe"))
    assert failed.splitlines() == ["Result: [ok] #2 [failed] dev p1: Update the web server package → apt could not "
                                   "reach the package mirror", "(1 task: 1 failed)"]
    assert photos.splitlines()[0].endswith("#1 [done] ops p1: Back up the photos folder → copied 212 files to "
                                           "/backup/photos") and "Rotate" not in photos
    # Nothing shares its words: every other task (the two questions before it too), said so.
    assert "no task matches 'Which agent restarted the printer?'; all of them:" in unmatched
    assert unmatched.endswith("(5 tasks: 4 done, 1 failed)") and "#6 " not in unmatched


@pytest.mark.timeout(60)
async def test_an_append_goes_through_append_file_and_is_read_back(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: refused a whole rewrite of CHANGELOG.md, it sent the refusal's
    own words as edit_file's `old`, then an empty `old`, until its steps ran out."""
    outputs = {"dev": [call("write_file", path="CHANGELOG.md", content="- fixed the login bug\n"),
                       call("append_file", path="CHANGELOG.md", text="- fixed the login bug"),
                       final("Appended the line."), REFLECT]}
    # Without the edit targets, which would not offer write_file here at all.
    host, backend, ws = crew(tmp_path, outputs, Harness(edit_targets=False))
    (ws / "CHANGELOG.md").write_text("# Changes\n\n- first release\n")
    async with host:  # the rules read CHANGELOG.md first: the task names it
        ended = await run_to_end(host, "Append the line '- fixed the login bug' to CHANGELOG.md", "dev")
        steps = await steps_of(host, ended.id)
    assert (ended.status, ended.result) == ("done", "Appended the line.")
    assert steps == [("read_file", "ok"), ("write_file", "refused"), ("append_file", "ok"), (None, "final")]
    assert (ws / "CHANGELOG.md").read_text() == "# Changes\n\n- first release\n- fixed the login bug\n"
    told = step_requests(backend, "dev")[1].messages[-1].content
    assert "add at its end with append_file" in told and "the exact text" not in told
    assert {"send_message", "post_channel"}.isdisjoint(offers(step_requests(backend, "dev")[0]))


def test_a_question_about_the_workspace_files_starts_with_their_listing(tmp_path: Path) -> None:
    from agents.crew import rules
    (tmp_path / "a.txt").write_text("x")
    first = rules.first_step(task("Which file in the workspace is the largest?"), DEV, tmp_path)
    assert first is not None and (first.tool, first.arguments) == ("list_dir", {"path": "."})
    named = rules.first_step(task("How many lines does a.txt have?"), DEV, tmp_path)
    assert named is not None and (named.tool, named.arguments) == ("read_file", {"path": "a.txt"})
    assert rules.first_step(task("Which port does the settings file set?"), DEV, tmp_path) is None


@pytest.mark.timeout(60)
async def test_a_subtask_that_writes_waits_for_the_look_and_carries_its_result(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: lead handed ops the look at the disk and dev the write at
    once; dev, with no figure, had to make one up or look again."""
    host, _, ws = crew(tmp_path, LOOK_THEN_WRITE)
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:
        ended = await run_to_end(host, PORT_TO_FILE, "lead")
        tasks = await host.store.read(queries.tasks)
    look, write = [t for t in tasks if t.parent_id == ended.id]
    assert (look.owner, look.status, write.owner, write.status) == ("review", "done", "dev", "done")
    assert write.created_at >= look.updated_at  # handed out after the look ended
    assert f"What the other subtasks found:\n- task {look.id} (review): The port is 8080." in write.body
    assert (ws / "port.txt").read_text() == "8080"
    assert ended.status == "done"


PORT_TO_FILE = "Find out which port settings.ini sets and save just that number in port.txt."
LOOK_THEN_WRITE = {
    "lead": [call("delegate", to="review", title="Which port does settings.ini set?"),
             call("delegate", to="dev", title="Save the port number in port.txt"),
             final("Saved."), final("combined"), REFLECT],  # "combined" if it waits, else a reflection
    "review": [final("The port is 8080."), REFLECT],  # after the rules read settings.ini
    "dev": [call("write_file", path="port.txt", content="8080"), final("Wrote 8080 to port.txt."), REFLECT]}


@pytest.mark.timeout(60)
async def test_without_the_wait_the_write_is_handed_out_beside_the_look(tmp_path: Path) -> None:
    host, _, ws = crew(tmp_path, LOOK_THEN_WRITE, Harness(writes_wait=False))
    (ws / "settings.ini").write_text("[server]\nport = 8080\n")
    async with host:
        ended = await run_to_end(host, PORT_TO_FILE, "lead")
        tasks = await host.store.read(queries.tasks)
    _, write = [t for t in tasks if t.parent_id == ended.id]
    assert "What the other subtasks found" not in write.body


@pytest.mark.timeout(60)
async def test_the_same_change_is_not_made_twice(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: it appended the changelog line, then appended it again."""
    line = call("append_file", path="CHANGELOG.md", text="- fixed the login bug")
    outputs = {"dev": [line, call("read_file", path="CHANGELOG.md"), line, final("Appended."), REFLECT]}
    host, _, ws = crew(tmp_path, outputs)
    (ws / "CHANGELOG.md").write_text("# Changes\n")
    async with host:
        ended = await run_to_end(host, "Append the line '- fixed the login bug' to CHANGELOG.md", "dev")
        steps = await steps_of(host, ended.id)
    assert steps == [("read_file", "ok"), ("append_file", "ok"), ("read_file", "ok"), ("append_file", "refused"),
                     (None, "final")]
    assert (ws / "CHANGELOG.md").read_text() == "# Changes\n- fixed the login bug\n"


@pytest.mark.timeout(60)
async def test_a_fix_is_offered_no_append_and_no_messages(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: asked to fix a typo, it messaged lead five times until its
    steps ran out; given append_file, it appended the corrected line below the old one."""
    outputs = {"dev": [call("edit_file", path="guide.txt", old="Then run teh tests.", new="Then run the tests."),
                       final("Fixed."), REFLECT]}
    ended, backend, ws, _ = await run_one(tmp_path, outputs, "Fix the typo 'teh' in guide.txt.",
                                       {"guide.txt": "Then run teh tests.\n"})
    assert ended.status == "done" and (ws / "guide.txt").read_text() == "Then run the tests.\n"
    offered = offers(step_requests(backend, "dev")[0])
    assert "edit_file" in offered and {"append_file", "send_message"}.isdisjoint(offered)

    outputs = {"dev": [call("edit_file", path="guide.txt", old="teh", new="the"), final("Fixed."), REFLECT]}
    (tmp_path / "all").mkdir()
    _, backend, _, _ = await run_one(tmp_path / "all", outputs, "Fix the typo 'teh' in guide.txt.",
                                  {"guide.txt": "Then run teh tests.\n"}, Harness(fitting_tools=False, edit_targets=False))
    assert {"append_file", "send_message"} <= offers(step_requests(backend, "dev")[0])


@pytest.mark.timeout(60)
async def test_lead_hands_each_part_to_an_agent_with_a_tool_made_for_it(tmp_path: Path) -> None:
    """Measured with Qwen-1.5B: lead handed ops both the file count and the CPU cores (ops
    can run `ls`), where the suite expects the files to go to an agent with list_dir."""
    outputs = {"lead": [call("delegate", to="ops", title="Count the workspace's files and this machine's cores"),
                        final("ops has it."),  # refused: the workspace part has no fitting agent yet
                        call("delegate", to="dev", title="How many files are in the workspace?"),
                        final("Both asked."), final("combined"), REFLECT],
               "ops": [final("It has two cores."), REFLECT],
               "dev": [final("There are 2 files."), REFLECT]}
    host, backend, ws = crew(tmp_path, outputs)
    (ws / "a.txt").write_text("a")
    (ws / "b.txt").write_text("b")
    async with host:
        ended = await run_to_end(host, "Tell me how many files are in the workspace and how many CPU cores "
                                       "this machine has.", "lead")
        steps = await steps_of(host, ended.id)
        tasks = await host.store.read(queries.tasks)
    assert steps[:3] == [("delegate", "ok"), (None, "refused"), ("delegate", "ok")]
    told = step_requests(backend, "lead")[2].messages[-1].content
    assert "the part about the workspace is not done: delegate it to dev or review" in told
    assert sorted(t.owner for t in tasks if t.parent_id == ended.id) == ["dev", "ops"]


# --- edit targets: once the files a change names are read, the next step changes them ---

def test_edit_choices_offer_the_read_files_and_their_unique_lines(tmp_path: Path) -> None:
    (tmp_path / "a.ini").write_text('[server]\nport = 8080\n\nport = 8080\n  "retries": 3\nport\nx\n')
    (tmp_path / "b.txt").write_text("x-ray\n")
    narrowed = grounding.edit_choices({"a.ini": tmp_path / "a.ini", "b.txt": tmp_path / "b.txt"},
                                      ["read_file", "edit_file", "append_file"], ["- done"])
    assert set(narrowed) == {"edit_file", "append_file"}
    edit = narrowed["edit_file"]["properties"]
    assert edit["path"] == {"enum": ["a.ini", "b.txt"]}
    # Twice-present lines and blank ones are no edit_file `old`, nor "port", found in other lines.
    assert edit["old"] == {"enum": ["[server]", '  "retries": 3', "x", "x-ray"]}
    assert narrowed["append_file"]["properties"]["text"] == {"enum": ["- done"]}
    (tmp_path / "long.txt").write_text("".join(f"line {i:04d}\n" for i in range(grounding.EDIT_LINES_MAX + 1)))
    free = grounding.edit_choices({"long.txt": tmp_path / "long.txt"}, ["edit_file", "append_file"])
    assert free["edit_file"]["properties"]["old"] == {"type": "string"}
    assert free["append_file"]["properties"]["text"] == {"type": "string"}  # nothing quoted
    assert grounding.edit_choices({"a.ini": tmp_path / "a.ini"}, ["read_file"]) == {}


def test_the_texts_a_task_quotes_are_found_and_an_apostrophe_is_no_quote() -> None:
    found = grounding.quoted(task("Don't wait: append '- fixed the login bug' and \"v2\" to notes.md"))
    assert found == ["- fixed the login bug", "v2"]


@pytest.mark.timeout(60)
async def test_once_the_named_file_is_read_the_next_step_can_only_change_it(tmp_path: Path) -> None:
    """Measured with Qwen-0.5B: having read settings.ini, it called edit_file on the prompt's
    example (todo.txt, `old` "milk") three times, or read the file again until its steps ran out."""
    outputs = {"dev": [call("edit_file", path="settings.ini", old="port = 8080", new="port = 9090"),
                       final("The port is now 9090."), REFLECT]}
    ended, backend, ws, _ = await run_one(tmp_path, outputs, "In settings.ini, change the port from 8080 to 9090.",
                                       {"settings.ini": "[server]\nport = 8080\nworkers = 4\n"})
    assert ended.status == "done" and (ws / "settings.ini").read_text() == "[server]\nport = 9090\nworkers = 4\n"
    change, answer = step_requests(backend, "dev")
    assert offers(change) == {"edit_file"}  # no final answer, no other tool, until the change is made
    arguments = change.schema["anyOf"][0]["properties"]["arguments"]  # type: ignore[index]
    assert arguments["properties"]["path"] == {"enum": ["settings.ini"]}
    assert arguments["properties"]["old"] == {"enum": ["[server]", "port = 8080", "workers = 4"]}
    assert "final" in offers(answer) and "read_file" in offers(answer)  # made: free again


@pytest.mark.timeout(60)
async def test_an_append_of_a_quoted_line_offers_that_line(tmp_path: Path) -> None:
    outputs = {"dev": [call("append_file", path="CHANGELOG.md", text="- fixed the login bug"),
                       final("Appended."), REFLECT]}
    ended, backend, ws, _ = await run_one(tmp_path, outputs, "Append the line '- fixed the login bug' to CHANGELOG.md",
                                       {"CHANGELOG.md": "# Changes\n\n- first release\n"})
    assert ended.status == "done"
    assert (ws / "CHANGELOG.md").read_text() == "# Changes\n\n- first release\n- fixed the login bug\n"
    change = step_requests(backend, "dev")[0]
    assert offers(change) == {"edit_file", "append_file"}
    append = next(o for o in change.schema["anyOf"] if o["properties"]["tool"]["const"] == "append_file")  # type: ignore[index]
    assert append["properties"]["arguments"]["properties"]["text"] == {"enum": ["- fixed the login bug"]}


@pytest.mark.timeout(60)
async def test_a_change_that_names_a_file_still_to_make_is_not_narrowed(tmp_path: Path) -> None:
    outputs = {"dev": [call("write_file", path="copy.txt", content="hello\n"), final("copy.txt holds hello."),
                       REFLECT]}
    ended, backend, ws, _ = await run_one(tmp_path, outputs, "Copy the first line of notes.txt into a new file copy.txt.",
                                       {"notes.txt": "hello\nworld\n"})
    assert (ended.status, ended.result) == ("done", "copy.txt holds hello."), ended.result
    assert (ws / "copy.txt").read_text() == "hello\n"
    assert "write_file" in offers(step_requests(backend, "dev")[0])


@pytest.mark.timeout(60)
async def test_without_edit_targets_the_step_after_the_read_offers_every_tool(tmp_path: Path) -> None:
    outputs = {"dev": [call("edit_file", path="settings.ini", old="8080", new="9090"), final("Done."), REFLECT]}
    ended, backend, _, _ = await run_one(tmp_path, outputs, "In settings.ini, change the port from 8080 to 9090.",
                                      {"settings.ini": "port = 8080\n"}, Harness(edit_targets=False))
    assert ended.status == "done"
    step = step_requests(backend, "dev")[0]
    assert {"read_file", "write_file", "edit_file", "final"} <= offers(step)
    edit = next(o for o in step.schema["anyOf"] if o["properties"].get("tool", {}).get("const") == "edit_file")  # type: ignore[index]
    assert "$ref" in edit["properties"]["arguments"]  # the tool's own schema, not narrowed


@pytest.mark.timeout(60)
async def test_a_file_to_create_is_the_only_path_and_a_figure_for_it_is_looked_up_first(tmp_path: Path) -> None:
    """Measured with Qwen-0.5B: asked to create todo.md, or to save the disk's use in
    disk.txt, it edited the prompt's example todo.txt."""
    outputs = {"dev": [call("write_file", path="todo.md", content="- buy milk\n"), final("Created todo.md."),
                       REFLECT]}
    ended, backend, ws, _ = await run_one(tmp_path, outputs, "Create todo.md with the line '- buy milk'.", {})
    assert ended.status == "done" and (ws / "todo.md").read_text() == "- buy milk\n"
    create = step_requests(backend, "dev")[0]
    assert offers(create) == {"write_file"}
    assert create.schema["anyOf"][0]["properties"]["arguments"]["properties"]["path"] == {"enum": ["todo.md"]}  # type: ignore[index]

    (tmp_path / "look").mkdir()
    outputs = {"dev": [json.dumps({"action": "act", "reason": "mine"}), call("list_dir", path="."),
                       call("write_file", path="count.txt", content="0\n"), final("Saved."), REFLECT]}
    # Without the rules' first look, so that the model's own first step is seen.
    ended, backend, ws, _ = await run_one(tmp_path / "look", outputs, "Save the number of files in the workspace in count.txt.",
                                       {}, Harness(rules_first=False))
    assert ended.status == "done" and (ws / "count.txt").read_text() == "0\n", ended.result
    look, save = step_requests(backend, "dev")[:2]
    assert offers(look) != {"write_file"} and "list_dir" in offers(look)  # not narrowed before a look
    assert offers(save) == {"write_file"}


# --- a change asked of an agent that cannot make it ---

TYPO = "Fix the typo 'teh' in guide.txt."


async def triaged(host: Host, task_id: int) -> AgentTriaged:
    events = await host.store.read(queries.events_after, 0, 10_000)
    [found] = [e.payload for e in events if isinstance(e.payload, AgentTriaged) and e.payload.task_id == task_id]
    return found


@pytest.mark.timeout(60)
async def test_a_change_asked_of_review_goes_to_dev_by_rule_and_is_made(tmp_path: Path) -> None:
    """Review has no tool that writes: the person's typo fix is handed to dev by rule (no
    model call decides it), dev makes and reads back the change, review states the result."""
    outputs = {"dev": [call("edit_file", path="guide.txt", old="run teh tests", new="run the tests"),
                       final("Fixed 'teh'."), REFLECT],
               "review": [final("dev fixed it"), REFLECT]}
    host, backend, ws = crew(tmp_path, outputs)
    (ws / "guide.txt").write_text("run teh tests\n")
    async with host:
        ended = await run_to_end(host, TYPO, "review")
        routed = await triaged(host, ended.id)
        [child] = [t for t in await host.store.read(queries.tasks) if t.parent_id == ended.id]
        child_steps = await steps_of(host, child.id)
    assert (routed.by, routed.action, routed.delegate_to) == ("rule", "delegate", "dev")
    assert "my tools cannot make" in routed.reason
    assert (child.owner, child.status) == ("dev", "done"), child.result
    assert child_steps == [("read_file", "ok"), ("edit_file", "ok"), (None, "final")]
    assert (ended.status, ended.result) == ("done", "dev fixed it")  # review's combine of dev's result
    assert (ws / "guide.txt").read_text() == "run the tests\n"
    assert [offers(q) for q in step_requests(backend, "review")] == [{"final"}]  # only the combine


@pytest.mark.timeout(60)
async def test_changes_staying_put_fail_at_once_instead_of_a_claimed_fix(tmp_path: Path) -> None:
    """With route_changes off, review keeps the typo fix (its tools can read the file) but
    cannot make it: the task fails at once naming who can, with no answer to claim it."""
    host, backend, ws = crew(tmp_path, {"review": [final("Fixed."), REFLECT]}, Harness(route_changes=False))
    (ws / "guide.txt").write_text("run teh tests\n")
    async with host:
        ended = await run_to_end(host, TYPO, "review")
        routed = await triaged(host, ended.id)
    assert routed.action == "act"
    assert (ended.status, ended.result) == ("failed", "it asks for a change to a file, and review has no tool "
                                                      "that makes one; dev can")
    assert not step_requests(backend, "review")
    assert (ws / "guide.txt").read_text() == "run teh tests\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("extra", "to"), [
    ("", "dev"),  # dev gave it and is the only agent that writes: back to dev
    ('[agents.scribe]\ntools = ["read_file", "edit_file"]\n', "scribe"),  # another writer: not back
])
async def test_a_change_handed_to_review_goes_back_to_the_giver_only_when_no_one_else_can(
        tmp_path: Path, extra: str, to: str) -> None:
    """dev gave review a change it cannot make: it goes to another agent that writes, and
    back to dev only when no other can (the work returning to where it can be done)."""
    host, _, ws = crew(tmp_path, {}, extra=extra)
    (ws / "guide.txt").write_text("run teh tests\n")
    with Store.open(tmp_path / "home" / "agentdeck.db", host.config.enabled_agents()) as store:
        parent = store.write(r.create_task, OWNER, "docs", owner="dev")
        store.write(r.set_task_status, "dev", parent.id, "blocked", "waiting for its subtask")
        child = store.write(r.create_task, "dev", TYPO, owner="review", parent_id=parent.id)
    async with host:
        deadline = time.monotonic() + 30
        while not (routed := [t for t in await host.store.read(queries.tasks) if t.parent_id == child.id]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert (await triaged(host, child.id)).delegate_to == to
    assert routed[0].owner == to
