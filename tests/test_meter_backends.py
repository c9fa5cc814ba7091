"""The slot meter with several backends: each slot labelled with its backend, one summary
per backend (kind, state, load), a breaker-open server told apart from a failed one and
drawn in the theme's error colour; the server's own meter endpoint (vLLM /metrics,
llama-server /slots) read by a poller, never by snapshot(). Pure tests on fakes beside a
real llama_cpp.server and a closed port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx2
import msgspec
import pytest
from rich.color import Color
from scripted_backend import ScriptedBackend
from textual.app import App, ComposeResult

from agents.config import InferenceConfig
from agents.config.schema import BackendConfig
from agents.inference.meter import BackendMeter, MeterSnapshot, SlotInfo, summarize
from agents.inference.openai_backend import OpenAIBackend
from agents.inference.routed import RoutedBackend
from tests.openai_server import ALIAS, LlamaCppServer, free_port, start_or_skip
from themes import AGENTDECK
from widgets.meter import SlotMeter, meter_text

HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07"
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
vllm:num_requests_waiting{model_name="m"} 2.0
vllm:kv_cache_usage_perc{model_name="m"} 0.25
"""


def _slot(index: int, agent: str | None) -> SlotInfo:
    return SlotInfo(index=index, agent=agent, state="generating" if agent else "idle", tokens_generated=0,
                    tokens_per_s=7.0 if agent else 0.0, cached_tokens=0)


def _snap(slots: list[SlotInfo], **fields: object) -> MeterSnapshot:
    base: dict[str, object] = dict(ts=1.0, state="ready", device="CPU", model="m", slots=slots, waiting={5: 1},
                                   kv_used=10, kv_total=40, tokens_per_s=7.0, gpu=None)
    return MeterSnapshot(**(base | fields))  # type: ignore[arg-type]


class Fixed(ScriptedBackend):
    """A backend whose meter is whatever the test sets."""

    def __init__(self, snap: MeterSnapshot) -> None:
        super().__init__(lambda request: "")
        self.snap = snap

    def snapshot(self) -> MeterSnapshot:
        return self.snap


def _breaker_open_snap() -> MeterSnapshot:
    summary = BackendMeter(name="gpu", kind="vllm", state="breaker_open", detail="circuit breaker open: refused",
                           running=0, waiting=0, kv_usage=0.5)
    return _snap([_slot(0, None)], state="breaker_open", kind="vllm", detail="circuit breaker open: refused",
                 kv_used=0, kv_total=0, tokens_per_s=0.0, waiting={}, backends=[summary])


# --- pure: the merge, the labels, the summaries -----------------------------------------------


def test_summarize_counts_a_backends_own_slots() -> None:
    summary = summarize("embedded", _snap([_slot(0, "dev"), _slot(1, None)]))
    assert summary == BackendMeter(name="embedded", kind="embedded", state="ready", model="m", running=1,
                                   waiting=1, kv_usage=0.25, tokens_per_s=7.0)


async def test_the_routed_meter_labels_each_slot_and_summarises_each_backend() -> None:
    local = Fixed(_snap([_slot(0, "triage"), _slot(1, None)]))
    remote = Fixed(_breaker_open_snap())
    routed = RoutedBackend({"embedded": local, "gpu": remote}, {"dev": "gpu"}, "embedded", required=["embedded"])
    snap = routed.snapshot()
    assert [(s.index, s.backend, s.agent) for s in snap.slots] == [
        (0, "embedded", "triage"), (1, "embedded", None), (2, "gpu", None)]
    assert [(b.name, b.kind, b.state) for b in snap.backends] == [
        ("embedded", "embedded", "ready"), ("gpu", "vllm", "breaker_open")]
    assert snap.backends[1].kv_usage == 0.5 and snap.backends[1].detail.startswith("circuit breaker open")
    assert snap.state == "ready" and snap.kv_total == 40  # the default backend's state; embedded KV cells


async def test_a_backend_that_did_not_start_reads_failed_with_why_not_breaker_open() -> None:
    routed = RoutedBackend({"embedded": Fixed(_snap([])), "gpu": Fixed(_snap([_slot(0, None)]))}, {}, "embedded")
    routed.down["gpu"] = "model 'x' is not served"
    gpu = routed.snapshot().backends[1]
    assert (gpu.state, gpu.detail) == ("failed", "model 'x' is not served")


def test_the_status_json_meter_round_trips_and_an_older_one_still_reads() -> None:
    """The heartbeat publishes the meter as msgpack; status --json and the attached deck read it back."""
    routed = RoutedBackend({"embedded": Fixed(_snap([_slot(0, "dev")])), "gpu": Fixed(_breaker_open_snap())},
                           {}, "embedded")
    published = msgspec.msgpack.decode(msgspec.msgpack.encode(routed.snapshot()))
    assert [b["state"] for b in published["backends"]] == ["ready", "breaker_open"]
    assert [s["backend"] for s in published["slots"]] == ["embedded", "gpu"]
    assert msgspec.convert(published, MeterSnapshot).backends == routed.snapshot().backends
    older = {k: v for k, v in published.items() if k not in ("backends", "kind", "detail")}
    older["slots"] = [{k: v for k, v in s.items() if k != "backend"} for s in older["slots"]]
    read = msgspec.convert(older, MeterSnapshot)
    assert read.backends == [] and read.slots[0].backend == ""


def test_the_embedded_only_meter_reads_as_before() -> None:
    text = meter_text(_snap([_slot(0, "dev"), _slot(1, None)]))
    assert text.plain == ("CPU  m  ready\nslots 1/2 busy   waiting 1\n ● slot 0: dev      generating 7 tok/s\n"
                          " · slot 1: -        idle\nKV 10/40 cells\n7.0 tok/s")


def test_the_meter_groups_backends_and_marks_the_open_breaker_in_the_error_style() -> None:
    routed = RoutedBackend({"embedded": Fixed(_snap([_slot(0, "dev")])), "gpu": Fixed(_breaker_open_snap())},
                           {}, "embedded")
    text = meter_text(routed.snapshot(), error_style="#FF5370")
    lines = text.plain.splitlines()
    assert lines[2].startswith("embedded embedded ready") and lines[3].startswith(" ● slot 0: dev")
    assert lines[4].startswith("gpu vllm breaker open  run 0 wait 0  KV 50%")
    assert lines[5] == "  circuit breaker open: refused" and lines[6].startswith(" · slot 1: -")
    red = {text.plain[span.start:span.end].strip() for span in text.spans if "#FF5370" in str(span.style)}
    assert red == {"gpu", "breaker open", "circuit breaker open: refused"}


def test_what_a_server_names_is_made_terminal_safe() -> None:
    summary = BackendMeter(name="gpu", kind="openai", state="breaker_open", detail=HOSTILE, model=HOSTILE)
    snap = _snap([msgspec.structs.replace(_slot(0, HOSTILE), backend="gpu")], model=HOSTILE, backends=[summary])
    plain = meter_text(snap).plain
    assert "\x1b" not in plain and "\x07" not in plain and "evil" in plain


async def test_the_poller_reads_vllm_metrics_and_drops_a_path_the_server_lacks() -> None:
    """The poller's reading, not snapshot(), talks to the server; snapshot() returns it."""
    asked: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        asked.append(request.url.path)
        if request.url.path == "/metrics":
            return httpx2.Response(200, text=VLLM_METRICS)
        return httpx2.Response(501, json={"error": "not enabled"})  # llama-server started with --no-slots

    b = OpenAIBackend("gpu", BackendConfig(url="http://vllm.invalid/v1", model="m", flavour="vllm"),
                      inference=InferenceConfig())
    b._http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer), base_url=b.root)
    b._state = "ready"
    try:
        before = b.snapshot().backends[0]
        assert (before.running, before.waiting, before.kv_usage) == (0, 0, None)
        assert await b._poll_once("/metrics") is True
        summary = b.snapshot().backends[0]
        assert (summary.kind, summary.running, summary.waiting, summary.kv_usage) == ("vllm", 3, 2, 0.25)
        assert await b._poll_once("/slots") is False  # not served: the poller stops asking
        calls = len(asked)
        b.snapshot()
        assert len(asked) == calls  # snapshot() never calls the server
    finally:
        await b._http.aclose()


# --- real: llama_cpp.server, and a closed port ------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    srv = start_or_skip()
    yield srv
    srv.stop()


@pytest.mark.timeout(180)
async def test_a_real_servers_request_shows_on_its_backends_labelled_slot(server: LlamaCppServer) -> None:
    remote = OpenAIBackend("gpu", BackendConfig(url=server.url, model=ALIAS, max_concurrent=2),
                           inference=InferenceConfig())
    routed = RoutedBackend({"embedded": ScriptedBackend(lambda request: "ok", slots=1), "gpu": remote},
                           {"dev": "gpu"}, "embedded", required=["embedded"])
    await routed.start()
    try:
        gen = routed.submit([{"role": "user", "content": "Write a long story about a lighthouse."}],
                            agent="dev", max_tokens=200, timeout_s=120)
        stream = aiter(gen)
        await anext(stream)  # streaming now: the server is working for dev
        await anext(stream)
        snap = routed.snapshot()
        ours = [s for s in snap.slots if s.agent == "dev"]
        assert [(s.backend, s.state) for s in ours] == [("gpu", "generating")], snap.slots
        gpu = snap.backends[1]
        assert (gpu.name, gpu.kind, gpu.state, gpu.running) == ("gpu", "llama-cpp-python", "ready", 1)
        assert gpu.tokens_per_s > 0
        assert "gpu llama-cpp-python ready  run 1" in meter_text(snap).plain
        gen.cancel()
        await gen
    finally:
        await routed.stop()


class MeterApp(App[None]):
    def compose(self) -> ComposeResult:
        yield SlotMeter(id="meter")

    def on_mount(self) -> None:
        self.register_theme(AGENTDECK)
        self.theme = AGENTDECK.name


@pytest.mark.timeout(60)
async def test_a_closed_port_opens_the_breaker_and_the_meter_shows_it_red() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens: connections are refused at once
    remote = OpenAIBackend("gpu", BackendConfig(url=url, model="m", connect_timeout_s=1.0, retries=0,
                                                breaker_failures=2, breaker_open_s=600),
                           inference=InferenceConfig())
    routed = RoutedBackend({"embedded": ScriptedBackend(lambda request: "ok", slots=1), "gpu": remote},
                           {"dev": "gpu"}, "embedded", required=["embedded"])
    await routed.start()  # unreachable at start is not fatal
    try:
        for _ in range(2):
            failed = await routed.submit([{"role": "user", "content": "hi"}], agent="dev", timeout_s=10)
            assert failed.finish_reason == "error", failed
        snap = routed.snapshot()
        gpu = snap.backends[1]
        assert gpu.state == "breaker_open" and "circuit breaker open" in gpu.detail, gpu
        assert snap.backends[0].state == "ready" and snap.state == "ready"  # the embedded one carries on
        app = MeterApp()
        async with app.run_test(size=(100, 20)) as pilot:
            meter = app.query_one(SlotMeter)
            meter.show(snap, time.monotonic())
            await pilot.pause()
            error = Color.parse(app.current_theme.error)
            lines = [meter.query_one("#meter-text").render_line(y) for y in range(meter.size.height)]
            red = "".join(seg.text for strip in lines for seg in strip
                          if seg.style is not None and seg.style.color is not None
                          and seg.style.color.triplet == error.triplet)
            assert "gpu" in red and "breaker open" in red, red
            assert "embedded" not in red
    finally:
        await asyncio.wait_for(routed.stop(), 10)
