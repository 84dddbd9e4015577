# Everything a fresh clone needs: `make demo` shows the provider working, `make test` checks it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: install test lint demo bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements/dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	# Pinned versions from the lock; bytecode compiled now, or every `import airflow` pays for it.
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --compile-bytecode requirements/dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode --no-deps -e .
	touch $@

# Cancel an order through a real Airflow DAG run against the local Kibo emulator.
demo: install
	$(BIN)/python -m devtools.demo

# Speed figures beside their targets (see benchmarks/run.py); about a minute.
bench: install
	$(BIN)/python -m benchmarks.run

# The whole suite: lint, type checks, unit tests, and DAG runs inside real Airflow against the emulator.
test: lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Re-resolve the pinned dependencies (needs the network); commit the result.
lock:
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements/dev.in -o requirements/dev.lock

clean:
	rm -rf $(VENV) .airflow-demo .pytest_cache .mypy_cache .ruff_cache dist
