"""The token ledger: usage rows written through record_usage as the agent, grouped by
agent, task (with its subtasks), day and backend/model, priced from [prices.MODEL];
`agentdeck usage` in a subprocess; the cockpit's task detail and agent pane lines; and
the crew recording who served each call."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import AGENTS, finished, ok, one_line_error, run
from scripted_backend import ScriptedBackend, queued

from agents.config import parse_config
from agents.config.schema import PriceConfig
from agents.errors import InvalidArgument
from agents.protocol import OWNER
from agents.runtime import Host, ledger
from agents.runtime.ledger import TaskTokens, UsageRow, parse_since, tasks_tokens, tokens_line
from agents.runtime.task_detail import task_detail
from agents.store import Store
from agents.store import reducers as r

DAY1 = dt.datetime(2026, 12, 1, 12).timestamp()  # local noons: the day never depends on the zone
DAY2 = dt.datetime(2026, 12, 2, 12).timestamp()


def record(store: Store, agent: str, at: float, prompt: int, cached: int, completion: int, *,
           task_id: int | None = None, backend: str | None = None, model: str | None = None,
           decode_s: float = 1.0, queue_s: float = 0.5) -> None:
    """A usage row written by the agent itself through record_usage, dated `at`."""
    def dated(tx: Any, actor: str, **kwargs: Any) -> Any:
        tx.now = at
        return r.record_usage(tx, actor, **kwargs)

    store.write(dated, agent, agent=agent, prompt_tokens=prompt, cached_tokens=cached,
                completion_tokens=completion, queue_s=queue_s, decode_s=decode_s, task_id=task_id,
                backend=backend, model=model)


def ledger_book(store: Store) -> dict[str, int]:
    """A job for lead with a subtask for dev (and one below that), a second job, and calls
    outside any task; returns the task ids."""
    job = store.write(r.create_task, OWNER, "ship the release", owner="lead")
    sub = store.write(r.create_task, "lead", "write the notes", owner="dev", parent_id=job.id)
    subsub = store.write(r.create_task, "dev", "check the links", owner="dev", parent_id=sub.id)
    other = store.write(r.create_task, OWNER, "check the disk", owner="ops")
    record(store, "lead", DAY1, 1000, 400, 100, task_id=job.id, backend="cloud", model="big")
    record(store, "dev", DAY1, 2000, 1000, 200, task_id=sub.id, backend="embedded", model="small.gguf")
    record(store, "dev", DAY2, 3000, 0, 300, task_id=subsub.id, backend="embedded", model="small.gguf")
    record(store, "ops", DAY2, 500, 0, 50, task_id=other.id, backend="cloud", model="big")
    record(store, "lead", DAY2, 10, 0, 1)  # the router: no task; a row as old ones are (no backend)
    return {"job": job.id, "sub": sub.id, "subsub": subsub.id, "other": other.id}


def totals(rows: list[UsageRow]) -> dict[str, tuple[int, int, int, int]]:
    return {row.group: (row.calls, row.prompt_tokens, row.cached_tokens, row.completion_tokens) for row in rows}


def test_record_usage_keeps_backend_and_model_and_checks_them(store: Store) -> None:
    record(store, "dev", DAY1, 10, 2, 3, backend="cloud", model="big")
    row = store.read(lambda c: c.execute("SELECT backend, model FROM inference_usage").fetchone())
    assert tuple(row) == ("cloud", "big")
    for bad in ({"backend": ""}, {"model": "m" * 201}, {"backend": 7}):
        with pytest.raises(InvalidArgument):
            store.write(r.record_usage, "dev", agent="dev", prompt_tokens=1, cached_tokens=0,
                        completion_tokens=1, queue_s=0.0, decode_s=0.0, **bad)
    assert store.read(lambda c: c.execute("SELECT count(*) FROM inference_usage").fetchone()[0]) == 1


def test_the_ledger_by_agent_task_day_and_model(store: Store) -> None:
    ids = ledger_book(store)
    assert totals(store.read(ledger.usage, "agent")) == {
        "dev": (2, 5000, 1000, 500), "lead": (2, 1010, 400, 101), "ops": (1, 500, 0, 50)}
    # Subtasks, to any depth, count toward the job a person asked for, shown by its title.
    by_task = store.read(ledger.usage, "task")
    assert totals(by_task) == {f"#{ids['job']} ship the release": (3, 6000, 1400, 600),
                               f"#{ids['other']} check the disk": (1, 500, 0, 50),
                               "(no task)": (1, 10, 0, 1)}
    assert [row.task_id for row in by_task] == [ids["job"], ids["other"], None]
    assert totals(store.read(ledger.usage, "day")) == {
        "2026-12-01": (2, 3000, 1400, 300), "2026-12-02": (3, 3510, 0, 351)}
    by_model = store.read(ledger.usage, "model")
    assert totals(by_model) == {"cloud/big": (2, 1500, 400, 150), "embedded/small.gguf": (2, 5000, 1000, 500),
                                "-/-": (1, 10, 0, 1)}
    dev = next(row for row in store.read(ledger.usage, "agent") if row.group == "dev")
    assert (dev.decode_s, dev.queue_s) == (2.0, 1.0)


def test_prices_turn_tokens_into_cost_with_cached_tokens_priced_apart(store: Store) -> None:
    ledger_book(store)
    prices = {"big": PriceConfig(prompt_per_mtok=2.0, cached_per_mtok=0.5, completion_per_mtok=10.0)}
    by_agent = {row.group: row.cost for row in store.read(ledger.usage, "agent", 0.0, prices)}
    # lead on big: 600 uncached prompt x 2 + 400 cached x 0.5 + 100 generated x 10, per million
    assert by_agent["lead"] == {"USD": pytest.approx((600 * 2 + 400 * 0.5 + 100 * 10) / 1e6)}
    assert by_agent["ops"] == {"USD": pytest.approx((500 * 2 + 50 * 10) / 1e6)}
    assert by_agent["dev"] == {}  # small.gguf has no price: no cost, rather than a cost of 0
    assert ledger.cost_text(by_agent["dev"]) == "-"
    assert ledger.cost_text({"EUR": 0.5, "USD": 0.25}) == "0.5000 EUR + 0.2500 USD"


def test_since_takes_a_date_or_an_age_and_refuses_the_rest(store: Store) -> None:
    now = DAY2 + 3600
    assert parse_since("24h", now) == now - 86_400
    assert parse_since("7d", now) == now - 7 * 86_400
    assert parse_since("2026-12-02", now) == dt.datetime(2026, 12, 2).timestamp()
    for bad in ("yesterday", "7", "-1d", "2026-13-01", "2026-12-1", "1e3h", "9999999d", "24h\x1b[2J"):
        with pytest.raises(InvalidArgument) as err:
            parse_since(bad, now)
        assert err.value.exit_code == 2 and "\x1b" not in str(err.value)
    ledger_book(store)
    later = store.read(ledger.usage, "day", parse_since("2026-12-02", now))
    assert [row.group for row in later] == ["2026-12-02"]
    with pytest.raises(InvalidArgument):
        store.read(ledger.usage, "week")


def test_a_tasks_tokens_include_its_subtasks_for_the_detail_and_the_pane(store: Store) -> None:
    ids = ledger_book(store)
    found = store.read(tasks_tokens, [ids["job"], ids["sub"], ids["other"]])
    assert found[ids["job"]] == TaskTokens(calls=3, prompt_tokens=6000, cached_tokens=1400,
                                           completion_tokens=600, subtasks=2)
    assert found[ids["sub"]] == TaskTokens(calls=2, prompt_tokens=5000, cached_tokens=1000,
                                           completion_tokens=500, subtasks=1)
    text, _ = store.read(task_detail, ids["job"])
    assert text.splitlines()[2] == ("tokens: 6k prompt (1.4k cached) · 600 generated · 3 call(s), "
                                    "2 subtask(s) included")
    assert ledger.pane_tokens(found[ids["job"]]) == "6k in (1.4k cached) 600 out"
    quiet = store.write(r.create_task, OWNER, "nothing yet", owner="ops")
    text, _ = store.read(task_detail, quiet.id)
    assert not any(line.startswith("tokens:") for line in text.splitlines())  # no call, no line
    assert tokens_line(TaskTokens()) == "" and ledger.pane_tokens(None) == ""


def test_the_cli_prints_the_table_the_json_and_one_line_errors(home: Path) -> None:
    (home / "config.toml").write_text('[prices.big]\nprompt_per_mtok = 2.0\ncompletion_per_mtok = 10.0\n'
                                      'cached_per_mtok = 0.5\ncurrency = "EUR"\n')
    assert ok(home, "usage").strip() == "no model calls recorded"
    with Store.open(home / "agentdeck.db", AGENTS) as store:
        ids = ledger_book(store)
    lines = ok(home, "usage", "--by", "task").splitlines()
    assert lines[0].split() == ["task", "prompt", "cached", "generated", "model", "s", "queue", "s", "calls",
                                "cost"]
    job = next(line for line in lines if line.startswith(f"#{ids['job']} ship the release"))
    # Only lead's call was on the priced model: 600 x 2 + 400 x 0.5 + 100 x 10 per million.
    assert job.split()[-8:] == ["6,000", "1,400", "600", "3.0", "1.5", "3", "0.0024", "EUR"]
    assert lines[-1].split()[:2] == ["total", "6,510"]
    rows = json.loads(ok(home, "usage", "--by", "model", "--since", "2026-12-02", "--json"))
    assert {(row["backend"], row["model"], row["calls"], row["prompt_tokens"]) for row in rows} == {
        ("cloud", "big", 1, 500), ("embedded", "small.gguf", 1, 3000), (None, None, 1, 10)}
    big = next(row for row in rows if row["model"] == "big")
    assert big["cost"] == {"EUR": pytest.approx((500 * 2 + 50 * 10) / 1e6)}
    for args, says in ((["--by", "week"], "--by: one of agent, task, day, model"),
                       (["--since", "soon"], "--since: expected a date"),
                       (["--since", "2026-02-30"], "--since: expected a date")):
        proc = run(home, "usage", *args)
        assert proc.returncode == 2 and says in one_line_error(proc), proc.stderr


@pytest.fixture
def running(db_path: Path, ws: Path) -> Callable[..., AsyncIterator[Host]]:
    """A host with the crew on a scripted backend (as tests/test_crew.py starts it)."""

    def start(outputs: dict[str, list[str]]):  # type: ignore[no-untyped-def]
        config = parse_config(f'workspace = "{ws}"\nsandbox = "off"\n')
        return Host(db_path, config, backend=ScriptedBackend(queued(outputs)), approvals="deny", crew=True)  # type: ignore[arg-type]

    return start  # type: ignore[return-value]


async def test_the_crew_records_who_served_each_call(running, db_path: Path) -> None:
    with Store.open(db_path, AGENTS) as store:
        task = store.write(r.create_task, OWNER, "say hello", owner="dev")
    reflect = json.dumps({"outcome": "success", "lesson": "greet briefly", "importance": 2, "tags": []})
    async with running({"dev": ['{"action": "act", "reason": "mine"}', '{"final": "hello"}', reflect]}) as host:
        assert (await finished(host, task.id)).status == "done"
        rows = await host.store.read(lambda c: c.execute(
            "SELECT backend, model, completion_tokens FROM inference_usage WHERE task_id = ?",
            (task.id,)).fetchall())
        by_model = await host.store.read(ledger.usage, "model")
    # A single backend is the config's default one; the model is what its meter names.
    assert rows and {(b, m) for b, m, _ in rows} == {("embedded", "scripted")}
    assert [row.group for row in by_model] == ["embedded/scripted"]
    assert by_model[0].calls >= len(rows)


async def test_an_agent_pane_shows_its_tasks_tokens_on_the_task_line() -> None:
    from textual.app import App, ComposeResult

    from agents.runtime.deck import AgentView
    from widgets.agent_pane import AgentPane

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield AgentPane("dev")

    view = AgentView(name="dev", state="acting", health="green", task_id=7, task_title="write the notes",
                     phase="", text="", call="", fed=0, last_tool=None, last_tool_outcome="",
                     tokens_per_s=0.0, detail="")
    async with One().run_test() as pilot:
        pane = pilot.app.query_one(AgentPane)
        await pane.show(view)
        assert str(pane.query_one(".pane-task").render()) == "#7 write the notes"
        pane.show_tokens(TaskTokens(calls=2, prompt_tokens=5000, cached_tokens=1000, completion_tokens=500))
        await pane.show(view)  # the next tick draws it
        assert str(pane.query_one(".pane-task").render()) == "#7 write the notes · 5k in (1k cached) 500 out"
