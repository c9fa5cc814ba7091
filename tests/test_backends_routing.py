"""Named backends: the config refuses what cannot work in one line; the routed backend
sends each agent's requests to its own backend, starts and stops them all within bounds;
two embedded engines on the real model answer side by side in one process."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import msgspec
import pytest

from agents.config import InferenceConfig, parse_config
from agents.errors import ConfigError, ModelError
from agents.inference import (
    Engine,
    RoutedBackend,
    agent_snapshot,
    build_backends,
    embedded_model_path,
)
from agents.inference.meter import Speed
from agents.secrets import resolve
from tests.helpers import one_line_error, run
from tests.scripted_backend import ScriptedBackend

REMOTE = '[backends.gpu]\nkind = "openai"\nurl = "http://127.0.0.1:8080/v1"\n'

BAD_CONFIGS = [
    ('default_backend = "gpu"\n', "default_backend: no backend named 'gpu'"),
    ('[agents.dev]\nmodel = "gpu"\n', "agents.dev.model: no backend named 'gpu'"),
    ('[backends.gpu]\nkind = "openai"\n', "backends.gpu.url: missing"),
    ('[backends.gpu]\nurl = "ftp://host/v1"\n', "backends.gpu.url: 'ftp://host/v1' is not an http"),
    ('[backends.gpu]\nurl = "localhost:8080"\n', "backends.gpu.url: 'localhost:8080' is not an http"),
    (REMOTE + 'api_key = "sk-live-123"\n', 'backends.gpu.api_key: write "keyring:NAME"'),
    (REMOTE + 'api_key = "keyring:no such"\n', "backends.gpu.api_key: bad secret name"),
    (REMOTE + 'api_key = "env:1BAD"\n', 'backends.gpu.api_key: write "keyring:NAME"'),
    ('[backends.embedded]\nkind = "openai"\nurl = "http://h/v1"\n', "backends.embedded.kind:"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_a_bad_backend_config_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.toml")
    assert str(caught.value).startswith(f"config.toml: {message}"), caught.value
    assert "\n" not in str(caught.value)
    assert "sk-live-123" not in str(caught.value)  # a key written in the config is never echoed


def test_good_backend_configs_load() -> None:
    config = parse_config(REMOTE + 'api_key = "env:GPU_KEY"\n[backends.small]\nkind = "embedded"\n'
                          '[agents.dev]\nmodel = "gpu"\n[agents.ops]\nmodel = "small"\n')
    assert config.agents["dev"].model == "gpu"
    assert config.backends["small"].kind == "embedded"
    assert parse_config('[backends.embedded]\nkind = "embedded"\n').backends["embedded"].kind == "embedded"


def test_env_var_keys_resolve_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_KEY_FOR_TEST", "sk-abc")
    assert resolve("env:GPU_KEY_FOR_TEST", "backends.gpu.api_key") == "sk-abc"
    monkeypatch.delenv("GPU_KEY_FOR_TEST")
    with pytest.raises(ConfigError, match=r"backends\.gpu\.api_key: environment variable 'GPU_KEY_FOR_TEST'"):
        resolve("env:GPU_KEY_FOR_TEST", "backends.gpu.api_key")


@pytest.mark.timeout(60)
def test_the_cli_refuses_an_unknown_backend_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    config = home / "config.toml"
    config.write_text('[agents.dev]\nmodel = "gpu"\n')
    config.chmod(0o600)
    proc = run(home, "status")
    assert proc.returncode != 0
    assert one_line_error(proc) == (f"agentdeck: {config}: agents.dev.model: no backend named 'gpu' "
                                    "(backends: embedded; define it under [backends.gpu])")


def test_the_template_shows_a_backend_example_and_stays_valid() -> None:
    from agents.config import default_config_text

    text = default_config_text()
    assert "# [backends.gpu]" in text and '# kind = "openai"' in text
    assert parse_config(text).default_backend == "embedded"
    # Uncommented, the example is a valid backend.
    example = text.replace("# [backends.gpu]", "[backends.gpu]").replace('# kind = "openai"', 'kind = "openai"')
    example = example.replace('# url = "http', 'url = "http')
    assert parse_config(example).backends["gpu"].url == "http://127.0.0.1:8080/v1"


# --- routing -------------------------------------------------------------------------------


def _answering(name: str) -> ScriptedBackend:
    return ScriptedBackend(lambda request: f"{name} answers {request.agent}")


def _routed(**kwargs: object) -> tuple[RoutedBackend, ScriptedBackend, ScriptedBackend]:
    local, remote = _answering("local"), _answering("remote")
    routed = RoutedBackend({"embedded": local, "gpu": remote}, {"dev": "gpu", "lead": "gpu", "triage": "embedded"},
                           "embedded", required=["embedded"], **kwargs)  # type: ignore[arg-type]
    return routed, local, remote


async def test_each_agent_reaches_its_own_backend_and_the_default_catches_the_rest() -> None:
    routed, local, remote = _routed()
    await routed.start()
    try:
        results = await asyncio.gather(*(routed.submit([{"role": "user", "content": "hi"}], agent=a).result()
                                         for a in ("dev", "lead", "triage", "scribe", "")))
        assert [r.text for r in results] == ["remote answers dev", "remote answers lead", "local answers triage",
                                             "local answers scribe", "local answers "]
        assert [r.agent for r in remote.requests] == ["dev", "lead"]
        assert [r.agent for r in local.requests] == ["triage", "scribe", ""]
    finally:
        await routed.stop()


async def test_tokens_are_counted_by_the_agents_own_backend() -> None:
    class Counting(ScriptedBackend):
        def __init__(self, per_word: int) -> None:
            super().__init__(lambda _r: "")
            self.per_word = per_word

        async def count_tokens(self, text: str, *, agent: str = "") -> int:
            return self.per_word * len(text.split())

    routed = RoutedBackend({"embedded": Counting(1), "gpu": Counting(3)}, {"dev": "gpu"}, "embedded")
    assert await routed.count_tokens("two words", agent="dev") == 6
    assert await routed.count_tokens("two words", agent="triage") == 2
    assert await routed.count_tokens("two words") == 2


async def test_each_agent_gets_its_own_backends_speed_and_the_meter_shows_all() -> None:
    routed, local, remote = _routed()
    slow = Speed(prompt_tps=50.0, gen_tps=5.0, measured_at=0.0)
    remote.speed, remote.slots, local.slots = slow, 2, 3
    await routed.start()
    try:
        assert routed.snapshot_for("dev").speed == slow
        assert agent_snapshot(routed, "dev").speed == slow
        assert agent_snapshot(routed, "triage").speed == local.speed
        assert agent_snapshot(remote, "anyone").speed == slow  # a plain backend is its own meter
        snap = routed.snapshot()
        assert [s.index for s in snap.slots] == [0, 1, 2, 3, 4]  # 3 local, then 2 remote
        assert snap.speed == local.speed and snap.state == "ready"
        assert snap.model == "embedded: scripted, gpu: scripted"
    finally:
        await routed.stop()


async def test_a_remote_backend_that_cannot_start_fails_only_its_agents() -> None:
    class Down(ScriptedBackend):
        async def start(self) -> None:
            raise ModelError("cannot reach http://127.0.0.1:9/v1: connection refused")

    local = _answering("local")
    routed = RoutedBackend({"embedded": local, "gpu": Down(lambda _r: "")}, {"dev": "gpu"}, "embedded",
                           required=["embedded"])
    await routed.start()  # not fatal
    try:
        started = time.monotonic()
        failed = await routed.submit([{"role": "user", "content": "hi"}], agent="dev")
        assert time.monotonic() - started < 1.0  # at once, not at the deadline
        assert failed.finish_reason == "error"
        assert failed.error == "backend gpu is not running: cannot reach http://127.0.0.1:9/v1: connection refused"
        assert (await routed.submit([{"role": "user", "content": "hi"}], agent="triage")).text == "local answers triage"
        assert routed.snapshots()["gpu"].state == "failed"
        assert routed.snapshot().state == "ready"  # the default runs
    finally:
        await routed.stop()


async def test_an_embedded_backend_that_cannot_start_is_fatal_and_the_others_stop() -> None:
    class Broken(ScriptedBackend):
        async def start(self) -> None:
            raise ModelError("model not found: /nowhere.gguf")

    remote = _answering("remote")
    routed = RoutedBackend({"embedded": Broken(lambda _r: ""), "gpu": remote}, {"dev": "gpu"}, "embedded",
                           required=["embedded"])
    with pytest.raises(ModelError, match=r"^backend embedded: model not found: /nowhere.gguf$"):
        await routed.start()
    assert remote.snapshot().state == "stopped"


async def test_a_refused_key_is_fatal_even_on_a_remote_backend() -> None:
    class Refused(ScriptedBackend):
        async def start(self) -> None:
            raise ConfigError("backends.gpu.api_key: the server refused the key (401)")

    local = _answering("local")
    routed = RoutedBackend({"embedded": local, "gpu": Refused(lambda _r: "")}, {"dev": "gpu"}, "embedded",
                           required=["embedded"])
    with pytest.raises(ConfigError, match=r"^backends\.gpu\.api_key: the server refused the key \(401\)$"):
        await routed.start()
    assert local.snapshot().state == "stopped"


async def test_stop_is_bounded_when_one_backend_hangs() -> None:
    class Hanging(ScriptedBackend):
        async def stop(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:  # and swallows the cancel, going on a while
                await asyncio.sleep(3)

    other = _answering("other")
    routed = RoutedBackend({"embedded": other, "gpu": Hanging(lambda _r: "")}, {"dev": "gpu"}, "embedded",
                           stop_s=0.5)
    await routed.start()
    started = time.monotonic()
    await routed.stop()
    assert time.monotonic() - started < 2.0
    assert other.snapshot().state == "stopped"


# --- the factory ---------------------------------------------------------------------------


def _small(config_text: str) -> object:
    config = parse_config(config_text)
    return msgspec.structs.replace(config, inference=InferenceConfig(n_ctx=512, slots=1, n_batch=64))


def test_only_the_embedded_backend_builds_the_plain_engine() -> None:
    config = _small(REMOTE)  # defined but used by no agent: not built, not routed
    assert type(build_backends(config)) is Engine  # type: ignore[arg-type]


def test_a_named_embedded_model_that_is_missing_names_its_backend(tmp_path: Path) -> None:
    config = _small(f'[backends.big]\nkind = "embedded"\nmodel = "{tmp_path / "none.gguf"}"\n'
                    '[agents.dev]\nmodel = "big"\n')
    with pytest.raises(ModelError, match=r"^backend big: model not found"):
        build_backends(config)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
async def test_two_embedded_engines_on_the_real_model_answer_in_one_process() -> None:
    path = embedded_model_path()
    assert path is not None, "the embedded SmolLM2 model is not installed"
    config = _small(f'[backends.second]\nkind = "embedded"\nmodel = "{path}"\n[agents.dev]\nmodel = "second"\n')
    backend = build_backends(config)  # type: ignore[arg-type]
    assert isinstance(backend, RoutedBackend)
    assert sorted(backend.backends) == ["embedded", "second"]
    assert all(type(b) is Engine for b in backend.backends.values())
    # Each model's memory is estimated before loading: the file plus its KV cache.
    for name in ("embedded", "second"):
        estimate = backend.memory[name]
        assert estimate.weights_bytes == path.stat().st_size
        assert 0 < estimate.kv_bytes < estimate.weights_bytes
    await backend.start()
    try:
        asks = {agent: backend.submit([{"role": "user", "content": "Say hello."}], agent=agent, max_tokens=8,
                                      timeout_s=120) for agent in ("dev", "ops")}
        results = {agent: await gen for agent, gen in asks.items()}
        for result in results.values():
            assert result.finish_reason in ("stop", "length"), result
            assert result.usage.completion_tokens > 0, result
        # Each went to its own engine: both engines served one request.
        served = {name: [s.agent for s in b.snapshot().slots] for name, b in backend.backends.items()}
        assert served == {"embedded": ["ops"], "second": ["dev"]}
        assert len(backend.snapshot().slots) == 2
    finally:
        await backend.stop()



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_remote_backend_whose_server_is_down_builds_starts_and_fails_only_its_agent() -> None:
    """The factory routes dev to an OpenAI-compatible server nobody listens on: the start
    goes on (not fatal), dev's call ends with an error naming the backend's trouble
    within its deadline, and the default (scripted here, in place of the engine) answers."""
    from agents.inference.openai_backend import OpenAIBackend

    url = f"http://127.0.0.1:{_free_port()}/v1"
    config = parse_config(f'[backends.gpu]\nkind = "openai"\nurl = "{url}"\nmodel = "m"\n'
                          f'connect_timeout_s = 1.0\nretries = 0\n[agents.dev]\nmodel = "gpu"\n')
    built = build_backends(config)
    assert isinstance(built, RoutedBackend)
    assert sorted(built.backends) == ["embedded", "gpu"] and built.required == {"embedded"}
    assert type(built.backends["gpu"]) is OpenAIBackend and type(built.backends["embedded"]) is Engine
    routed = RoutedBackend({"embedded": _answering("local"), "gpu": built.backends["gpu"]},
                           built.routes, "embedded", required=["embedded"])
    await routed.start()
    try:
        started = time.monotonic()
        failed = await routed.submit([{"role": "user", "content": "hi"}], agent="dev", timeout_s=10)
        assert failed.finish_reason in ("error", "timeout") and failed.error, failed
        assert time.monotonic() - started < 15
        answered = await routed.submit([{"role": "user", "content": "hi"}], agent="lead")
        assert answered.text == "local answers lead"
    finally:
        await routed.stop()
