# Everything a fresh clone needs: `make demo` shows the provider working, `make test` checks it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: install test lint demo bench dist docs lock clean test-matrix test-older test-distributed

install: $(VENV)/.installed

# A virtual environment from a lock, with the package installed into it (editable, without its
# dependencies): $(call venv-from-lock,FOLDER,LOCK). Bytecode is compiled now, or every `import airflow`
# pays for it.
define venv-from-lock
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(1)/bin/uv pip sync --quiet --python $(1)/bin/python --compile-bytecode $(2)
	$(1)/bin/uv pip install --quiet --python $(1)/bin/python --compile-bytecode --no-deps -e .
	touch $(1)/.installed
endef

$(VENV)/.installed: requirements/dev.lock pyproject.toml
	$(call venv-from-lock,$(VENV),requirements/dev.lock)

# Cancel an order through a real Airflow DAG run against the local Kibo emulator.
demo: install
	$(BIN)/python -m devtools.demo

# Speed figures beside their targets (see benchmarks/run.py); about a minute.
bench: install
	$(BIN)/python -m benchmarks.run

# The whole suite: lint, type checks, unit tests, DAG runs inside real Airflow against the emulator, and
# the documentation site (tests/test_docs.py runs `make docs`, checks its links and looks at it in Chromium).
# Two test files at a time (pytest-xdist; a file's tests stay together, so its module fixtures run once):
# most of the suite waits on Airflow subprocesses, which two cores serve side by side.
PYTEST_PARALLEL := -n 2 --dist loadfile

test: lint
	$(BIN)/pytest $(PYTEST_PARALLEL)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The wheel and sdist, into dist/: only uv (in a small venv of its own) and the build backend it fetches,
# not the development environment.
dist: .venv-build/.installed
	.venv-build/bin/uv build --out-dir dist

.venv-build/.installed:
	test -x .venv-build/bin/python || $(PYTHON) -m venv .venv-build
	.venv-build/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	touch $@

# The documentation site (docs/, Sphinx with MyST pages) into docs/_build/html, from its own lock in
# .venv-docs: warnings are errors (-W, all reported: --keep-going), every cross-reference must resolve (-n),
# and every page is read afresh (-E). tests/test_docs.py runs it with DOCS_OUT set, checks every internal
# link and anchor of the result, and looks at it in Chromium.
DOCS_OUT ?= docs/_build/html

docs: .venv-docs/.installed
	.venv-docs/bin/sphinx-build -W --keep-going -n -E -q -b html docs $(DOCS_OUT)

.venv-docs/.installed: requirements/docs.lock pyproject.toml
	$(call venv-from-lock,.venv-docs,requirements/docs.lock)

# Re-resolve the pinned dependencies (needs the network); commit the results.
lock: install
	cd requirements && for name in dev distributed docs $(addprefix airflow-,$(MATRIX)); do \
	  ../$(BIN)/uv pip compile --quiet --python-version 3.11 $$name.in -o $$name.lock || exit 1; done

# The supported range: the newest Airflow (`make test`) and the older releases below, each in its own
# virtual environment from its own lock. The browser test and the release checks run on the newest only;
# the form itself is checked on each through the API server's hook_meta.
MATRIX := 3.0 3.2

test-matrix: test test-older

test-older: $(addprefix test-airflow-,$(MATRIX))

test-airflow-%: .venv-airflow-%/.installed
	.venv-airflow-$*/bin/pytest -p no:cacheprovider -m "not newest_only and not distributed" $(PYTEST_PARALLEL)

.venv-airflow-%/.installed: requirements/airflow-%.lock pyproject.toml
	$(call venv-from-lock,.venv-airflow-$*,requirements/airflow-$*.lock)

# Production-shaped Airflow: CeleryExecutor with two workers, PostgreSQL, Redis and a triggerer, all on
# 127.0.0.1 (tests/test_distributed.py; installs postgresql and redis-server with apt-get when missing).
# Its own venv from its own lock (dev.lock plus Celery and psycopg2), so `make test` stays as it is.
test-distributed: .venv-distributed/.installed
	# A basetemp of its own: other pytest sessions on the machine prune /tmp/pytest-of-$$USER while this runs.
	.venv-distributed/bin/pytest -p no:cacheprovider -s --basetemp=.pytest-distributed -m distributed tests/test_distributed.py tests/integration/test_tenant_budget_distributed.py

.venv-distributed/.installed: requirements/distributed.lock pyproject.toml
	$(call venv-from-lock,.venv-distributed,requirements/distributed.lock)

clean:
	rm -rf $(VENV) .venv-airflow-* .venv-distributed .venv-docs .venv-build docs/_build .pytest-distributed .airflow-demo .pytest_cache .mypy_cache .ruff_cache dist
