"""Which harness levers acted in a task (TaskRunner.acted, Crew.levers_acted), and the
promise `bench crew --suite --where-acted` rests on: a lever that did not act changed
nothing, so turning it off sends the model exactly the same requests and ends the task
the same way. Checked for every ablation over scenarios that between them make most
levers act (scripted model, real crew, store and tools)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from scripted_backend import ScriptRequest
from test_grounding import REFLECT, call, crew, final, run_to_end

from agents.crew.harness import ABLATIONS, DEFAULT, Harness, levers_off

SUM = "What is the sum of the numbers in numbers.txt?"
NUMBERS = {"numbers.txt": "17\n25\n8\n"}
CHANGE = "Change the port in settings.ini to 9090"
SETTINGS = {"settings.ini": "[server]\nport = 8080\n"}
# Each scenario: the task, its owner, the workspace, and each agent's outputs in order.
SCENARIOS: dict[str, tuple[str, str, dict[str, str], dict[str, list[str]]]] = {
    "sum, computed": (SUM, "dev", NUMBERS, {"dev": [call("calculate", expression="17+25+8"),
                                                    final("The sum is 50."), REFLECT]}),
    "sum, made up then computed": (SUM, "dev", NUMBERS, {"dev": [
        final("The sum is 17."), call("calculate", expression="17+25+8"), final("The sum is 50."), REFLECT]}),
    "a change": (CHANGE, "dev", SETTINGS, {"dev": [
        call("edit_file", path="settings.ini", old="port = 8080", new="port = 9090"),
        final("The port is now 9090."), REFLECT]}),
    "a change asked of review": ("Fix the typo 'teh' in guide.txt.", "review", {"guide.txt": "run teh tests\n"}, {
        "dev": [call("edit_file", path="guide.txt", old="run teh tests", new="run the tests"),
                final("Fixed."), REFLECT],
        "review": [final("dev fixed it"), REFLECT]}),
    "an answer cut by its cap": ("write a haiku about tea", "dev", {}, {"dev": [
        '{"action": "act", "reason": "mine"}', '{"final": "' + "green tea, " * 800 + '"}', REFLECT]}),
    "delegated, combined": ("Find out which port settings.ini sets and tell me", "lead", SETTINGS, {
        "lead": [call("delegate", to="dev", title="Which port is set in settings.ini?"),
                 final("dev has it: the port is set."), final("The port is 9999."), REFLECT],
        "dev": [call("read_file", path="settings.ini"), final("The port is 8080."), REFLECT]}),
}


class Run(NamedTuple):
    """A scenario's end."""
    status: str
    result: str
    acted: set[str]  # the levers that acted
    requests: dict[str, list[ScriptRequest]]  # what each agent's model was sent, in order


def fresh(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)  # the same paths every run: prompts name the workspace
    where.mkdir()


async def run(where: Path, scenario: str, harness: Harness) -> Run:
    title, owner, files, outputs = SCENARIOS[scenario]
    fresh(where)
    host, backend, ws = crew(where, {agent: list(said) for agent, said in outputs.items()}, harness)
    for name, text in files.items():
        (ws / name).write_text(text)
    async with host:
        ended = await run_to_end(host, title, owner)
        assert host.crew is not None
        acted = set(host.crew.levers_acted)
    requests: dict[str, list[ScriptRequest]] = {}
    for request in backend.requests:
        requests.setdefault(request.agent, []).append(request)
    return Run(ended.status, ended.result or "", acted, requests)


@pytest.mark.timeout(60)
async def test_a_lever_acts_where_it_refuses_and_not_where_the_model_was_right(tmp_path: Path) -> None:
    right = await run(tmp_path / "run", "sum, computed", DEFAULT)
    made_up = await run(tmp_path / "run", "sum, made up then computed", DEFAULT)
    assert right[:2] == made_up[:2] == ("done", "The sum is 50.")
    assert "grounded_numbers" in made_up.acted and "grounded_numbers" not in right.acted
    # What shaped both: a question (no write tools), evidence first (the rules read the file).
    assert {"evidence", "questions_read_only", "rules_first", "grammar", "calculator"} <= right.acted
    assert not {"verify_changes", "read_before_write", "edit_targets", "combine_verified"} & right.acted


@pytest.mark.timeout(60)
async def test_a_change_and_a_delegation_record_the_levers_that_shaped_them(tmp_path: Path) -> None:
    change = await run(tmp_path / "run", "a change", DEFAULT)
    assert change[:2] == ("done", "The port is now 9090.")
    assert {"edit_targets", "verify_changes", "rules_first"} <= change.acted
    assert "read_before_write" not in change.acted  # the file was read (the rules' first step) before the edit
    delegated = await run(tmp_path / "run", "delegated, combined", DEFAULT)
    assert delegated[:2] == ("done", "dev: The port is 8080.")
    assert "combine_verified" in delegated.acted


@pytest.mark.timeout(60)
async def test_a_routed_change_and_a_kept_cut_answer_record_their_levers(tmp_path: Path) -> None:
    routed = await run(tmp_path / "run", "a change asked of review", DEFAULT)
    assert routed[:2] == ("done", "dev fixed it") and "route_changes" in routed.acted
    cut = await run(tmp_path / "run", "an answer cut by its cap", DEFAULT)
    assert cut.status == "done" and "cut_replies" in cut.acted
    assert "route_changes" not in cut.acted and "cut_replies" not in routed.acted


def test_levers_off_names_what_each_ablation_turns_off() -> None:
    assert levers_off(DEFAULT) == frozenset()
    assert levers_off(ABLATIONS["whole results"]) == {"result_chars"}
    assert levers_off(ABLATIONS["no grounding"]) >= {"evidence", "edit_targets", "combine_verified"}
    assert all(levers_off(h) for h in ABLATIONS.values())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_a_lever_that_did_not_act_changes_nothing_when_turned_off(tmp_path: Path, scenario: str) -> None:
    default = await run(tmp_path / "run", scenario, DEFAULT)
    quiet = [name for name, h in ABLATIONS.items() if not levers_off(h) & default.acted]
    assert quiet, "every ablation acted: the scenario checks nothing"
    for name in quiet:
        off = await run(tmp_path / "run", scenario, ABLATIONS[name])
        assert off[:2] == default[:2], name
        assert off.requests == default.requests, f"{name}: the model was sent something else, yet no lever of it acted"
