"""Protocol: versioned msgpack envelopes, tagged payloads, clear errors for what we cannot read."""

from __future__ import annotations

import msgspec
import pytest

from agents.errors import ProtocolError
from agents.protocol import (
    PROTOCOL_VERSION,
    ApprovalDecided,
    MemoryCompacted,
    Payload,
    Task,
    TaskCreated,
    TaskStatusChanged,
    ToolFinished,
    decode_payload,
    encode_payload,
    kind_of,
    to_builtins,
)


def _task(**over: object) -> Task:
    fields: dict[str, object] = dict(
        id=7, parent_id=None, job_id=7, owner="dev", created_by="owner", title="fix the build",
        body="", status="queued", priority=1, result=None, attempts=0, deadline=None,
        created_at=1.5, updated_at=1.5,
    )
    fields.update(over)
    return Task(**fields)  # type: ignore[arg-type]


PAYLOADS: list[Payload] = [
    TaskCreated(task=_task()),
    TaskStatusChanged(task_id=7, old="queued", new="active"),
    TaskStatusChanged(task_id=7, old="active", new="done", result="ok: 3 files"),
    ApprovalDecided(approval_id=3, status="approved", decided_by="user", scope="always", rule_id=9),
    MemoryCompacted(summary_id=10, compacted=[1, 2, 3]),
    ToolFinished(call_id=4, status="interrupted", result=None),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: kind_of(p))
def test_round_trip_gives_back_the_exact_payload_type(payload: Payload) -> None:
    decoded = decode_payload(encode_payload(payload))
    assert type(decoded) is type(payload)
    assert decoded == payload


def test_envelope_carries_the_current_protocol_version() -> None:
    raw = msgspec.msgpack.decode(encode_payload(TaskStatusChanged(task_id=1, old="queued", new="active")))
    assert raw[0] == PROTOCOL_VERSION
    assert raw[1]["type"] == "task.status"


def test_every_payload_kind_is_distinct_and_dotted() -> None:
    kinds = [t.__struct_config__.tag for t in Payload.__args__]  # type: ignore[attr-defined]
    assert len(kinds) == len(set(kinds))  # two payloads with one tag would decode as one
    assert all("." in k for k in kinds)


def test_newer_protocol_version_is_a_clear_protocol_error() -> None:
    body = msgspec.msgpack.decode(encode_payload(TaskStatusChanged(task_id=1, old="queued", new="active")))[1]
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION + 1, body])
    with pytest.raises(ProtocolError) as info:
        decode_payload(blob, event_id=42)
    message = str(info.value)
    assert "event 42" in message
    assert f"version {PROTOCOL_VERSION + 1}" in message
    assert "upgrade agentdeck" in message
    assert "\n" not in message


def test_a_far_future_envelope_shape_still_gives_the_version_error() -> None:
    # A future version may change the body completely; we must still say "newer version".
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION + 5, "something else", {"x": 1}])
    with pytest.raises(ProtocolError, match="protocol version"):
        decode_payload(blob)


@pytest.mark.parametrize("version", [0, -1])
def test_versions_below_one_are_unknown_too(version: int) -> None:
    body = msgspec.msgpack.decode(encode_payload(TaskStatusChanged(task_id=1, old="queued", new="active")))[1]
    with pytest.raises(ProtocolError, match="protocol version"):
        decode_payload(msgspec.msgpack.encode([version, body]), event_id=1)


def test_unknown_payload_kind_is_a_protocol_error() -> None:
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION, {"type": "task.teleported", "task_id": 1}])
    with pytest.raises(ProtocolError) as info:
        decode_payload(blob, event_id=5)
    assert "event 5" in str(info.value)
    assert "task.teleported" in str(info.value)


def test_payload_with_a_wrong_field_type_is_a_protocol_error() -> None:
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION, {"type": "task.status", "task_id": "x",
                                                      "old": "queued", "new": "active"}])
    with pytest.raises(ProtocolError, match="cannot decode"):
        decode_payload(blob)


@pytest.mark.parametrize("blob", [b"", b"\xc1", b"not msgpack at all", msgspec.msgpack.encode({"v": 1})])
def test_garbage_is_a_protocol_error_not_a_crash(blob: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(blob)


def test_invalid_status_literal_is_refused_on_decode() -> None:
    blob = msgspec.msgpack.encode([PROTOCOL_VERSION, {"type": "task.status", "task_id": 1,
                                                      "old": "queued", "new": "teleported"}])
    with pytest.raises(ProtocolError):
        decode_payload(blob)


def test_to_builtins_is_json_ready() -> None:
    out = to_builtins(TaskCreated(task=_task(owner=None)))
    assert out == {"type": "task.created", "task": msgspec.to_builtins(_task(owner=None))}
    msgspec.json.encode(out)  # would raise if anything were not JSON-ready
