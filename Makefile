# `make demo` and `make test` set up the environment on first use (about 7 GB: torch with CUDA
# libraries, which also runs on CPUs), then reuse it. VENV may point anywhere, e.g. a shared cache.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo-output

.PHONY: setup demo test lint clean

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash .ci/setup

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/transferkit demo --out $(OUT)

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(OUT) .pytest_cache
