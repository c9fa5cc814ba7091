"""One backend protocol: the real engine (built by the factory, as every front end builds
it) and the scripted backend both meet it, and the host reads what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from scripted_backend import ScriptedBackend, queued

from agents.config import InferenceConfig, SamplingConfig, default_config
from agents.errors import ModelError
from agents.inference import Backend, MeterSnapshot, build_backend, resolve_model_path
from agents.runtime import Host

ANSWER = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
GREEDY = SamplingConfig(temperature=0.0, max_tokens=32, timeout_s=60)


class OnlyAMeter:
    """What the deck once needed: a snapshot and nothing else. Not a backend."""

    def snapshot(self) -> MeterSnapshot:
        raise AssertionError("never called")


def test_something_that_only_meters_is_not_a_backend() -> None:
    assert not isinstance(OnlyAMeter(), Backend)


@pytest.mark.timeout(120)
async def test_the_factory_built_engine_meets_the_protocol_and_answers() -> None:
    backend = build_backend(InferenceConfig(n_ctx=512, slots=1, n_batch=64), sampling=GREEDY)
    assert isinstance(backend, Backend)
    assert backend.load_time_s is None and backend.snapshot().state == "starting"
    await backend.start()
    try:
        assert backend.load_time_s is not None and backend.load_time_s > 0
        assert isinstance(backend.config, InferenceConfig) and backend.config.slots == 1
        assert await backend.count_tokens("the quick brown fox") >= 4
        gen = backend.submit([{"role": "user", "content": "Is water wet? Answer in JSON."}], agent="ops",
                             schema=ANSWER, max_tokens=32, priority=3, timeout_s=60)
        pieces = [piece async for piece in gen]
        result = await gen
        assert result.finish_reason == "stop", result
        assert "".join(pieces) == result.text
        assert isinstance(json.loads(result.text)["ok"], bool)  # the schema held
        assert result.agent == "ops" and result.usage.completion_tokens >= 1
        meter = backend.snapshot()
        assert isinstance(meter, MeterSnapshot) and meter.state == "ready" and len(meter.slots) == 1
    finally:
        await backend.stop()
    assert backend.snapshot().state == "stopped"


def test_the_factory_resolves_the_model_as_the_cli_does(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelError):
        build_backend(InferenceConfig(model=str(missing)))
    real = resolve_model_path(None, "")
    backend = build_backend(InferenceConfig(model=str(missing)), model=real)  # --model wins, unloaded
    assert backend.snapshot().model == real.name


async def test_the_scripted_backend_meets_the_protocol() -> None:
    backend = ScriptedBackend(queued({"ops": ['{"ok": true}']}))
    assert isinstance(backend, Backend)
    assert backend.config is None  # the host's own config stands
    await backend.start()
    try:
        result = await backend.submit([{"role": "user", "content": "x"}], agent="ops", schema=ANSWER,
                                      max_tokens=32, priority=3, timeout_s=60)
        assert result.finish_reason == "stop" and json.loads(result.text) == {"ok": True}
        assert await backend.count_tokens("two words") == 2
        assert backend.snapshot().state == "ready"
    finally:
        await backend.stop()


@pytest.mark.timeout(60)
async def test_the_host_budgets_from_the_backends_config_when_it_has_one(db_path: Path) -> None:
    config = default_config()
    lowered = msgspec.structs.replace(config.inference, n_ctx=config.inference.n_ctx // 2)
    async with Host(db_path, config, backend=ScriptedBackend(queued({}), config=lowered)) as host:
        assert host.config.inference == lowered
    async with Host(db_path, config, backend=ScriptedBackend(queued({}))) as host:
        assert host.config.inference == config.inference
