# Everything a fresh clone needs: `make demo` shows the provider working, `make test` checks it.
PYTHON ?= python3
FIND_PYTHON = $(PYTHON) devtools/find_python.py
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: install test test-fast lint demo bench dist docs lock clean test-matrix test-legs test-older \
	test-pythons test-distributed pythons matrix

install: $(VENV)/.installed

# A virtual environment from a lock, with the package installed into it (editable, without its
# dependencies): $(call venv-from-lock,FOLDER,LOCK). Bytecode is compiled now, or every `import airflow`
# pays for it.
# $(3), when given, is the Python X.Y to make it with: devtools/find_python.py finds that interpreter (PATH,
# pyenv, or PYTHONXY=/path) or fails naming it, and the venv is checked to run as X.Y.
define venv-from-lock
	test -x $(1)/bin/python || $(if $(3),{ py="$$($(FIND_PYTHON) $(3))" && "$$py" -m venv $(1); },$(PYTHON) -m venv $(1))
	$(if $(3),PYTHON$(subst .,,$(3))=$(1)/bin/python $(FIND_PYTHON) $(3) >/dev/null)
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
# the documentation site (tests/integration/test_docs.py runs `make docs`, checks its links and looks at
# it in Chromium).
# Two test files at a time (pytest-xdist; a file's tests stay together, so its module fixtures run once):
# most of the suite waits on Airflow subprocesses, which two cores serve side by side.
PYTEST_PARALLEL := -n 2 --dist loadfile

test: lint
	KIBO_MATRIX_LEG=$(MAIN_LEG) $(BIN)/pytest $(PYTEST_PARALLEL)

# The unit tests alone (tests/unit: in process, against the emulator over HTTP on 127.0.0.1), in about a
# minute and a half; tests/integration (Airflow processes, the browser, the docs and release builds) is
# left out.
# Three files at a time: most of their time is the emulator's Retry-After and latency waits; four or more
# contend for the two cores (each in-process DAG run costs about 4 s of CPU in Airflow itself). The
# files with DAG runs, the longest, go first (tests/conftest.py orders them; xdist keeps that order).
# The core legs run their in-process part the same way.
PYTEST_UNIT_PARALLEL := -n 3 --dist loadfile --no-loadscope-reorder

test-fast: install
	$(BIN)/pytest $(PYTEST_UNIT_PARALLEL) -m "not integration and not distributed" tests/unit

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
# and every page is read afresh (-E). tests/integration/test_docs.py runs it with DOCS_OUT set, checks every
# internal link and anchor of the result, and looks at it in Chromium.
DOCS_OUT ?= docs/_build/html

docs: .venv-docs/.installed
	.venv-docs/bin/sphinx-build -W --keep-going -n -E -q -b html docs $(DOCS_OUT)

.venv-docs/.installed: requirements/docs.lock pyproject.toml
	$(call venv-from-lock,.venv-docs,requirements/docs.lock)

# Re-resolve the pinned dependencies (needs the network); commit the results. Each matrix leg's lock is
# resolved for that leg's Python; uv keeps the pins of the lock it rewrites wherever they still resolve.
lock: install
	cd requirements && for name in dev distributed docs; do \
	  ../$(BIN)/uv pip compile --quiet --python-version 3.11 $$name.in -o $$name.lock || exit 1; done
	cd requirements && $(foreach leg,$(LEGS),../$(BIN)/uv pip compile --quiet \
	  --python-version $(call leg-python,$(leg)) $(call leg-in,$(leg)) -o airflow-$(leg).lock &&) true

# The test matrix: every Python the package declares on the newest Airflow, and each older Airflow minor on
# a Python it supports. A leg is AIRFLOW-pyPYTHON; it runs in .venv-airflow-LEG, made by that Python
# (found on PATH or under pyenv's root, or PYTHON310=/path/to/python and so on; a missing one fails the
# run, naming it), from requirements/airflow-LEG.lock (resolved for that Python from dev.in for the newest
# Airflow, from airflow-AIRFLOW.in for the others). The main leg is `make test` itself (.venv, dev.lock).
# FULL legs run the whole suite, CORE legs the core subset below (CONTRIBUTING.md says why).
# tests/integration/test_matrix.py holds README.md's table and pyproject's classifiers to these lines (`make matrix`).
NEWEST := 3.3
MAIN_LEG := $(NEWEST)-py3.11
FULL_LEGS := $(NEWEST)-py3.13 3.0-py3.10
CORE_LEGS := $(NEWEST)-py3.10 $(NEWEST)-py3.12 3.1-py3.11 3.2-py3.11
LEGS := $(FULL_LEGS) $(CORE_LEGS)

leg-airflow = $(firstword $(subst -py, ,$(1)))
leg-python = $(lastword $(subst -py, ,$(1)))
leg-in = $(if $(filter $(NEWEST),$(call leg-airflow,$(1))),dev.in,airflow-$(call leg-airflow,$(1)).in)
leg-kind = $(if $(filter $(1),$(MAIN_LEG) $(FULL_LEGS)),full,core)

# What every leg but the main one leaves out: the distributed test (`make test-distributed`), the
# `once` tests (the docs build, the release checks, `make demo`: they build from their own venvs or from
# dev.lock, whichever venv runs pytest) and the `pace_proof` tests (the shared tenant rate's minutes-long
# timing proofs against a real Redis: arithmetic no Python or Airflow version changes; the full legs still
# run the Redis scripts' tests and the scheduler's proof). Legs on an older Airflow leave out
# `newest_only` too.
leg-markers = not distributed and not once and not pace_proof$(if $(filter $(NEWEST),$(call leg-airflow,$(1))),, and not newest_only)

# The core subset: every test not marked `integration` (tests/unit, in process: the connection rules, the
# hook's wire format and fault handling against the emulator, both operators' contracts in in-process DAG
# runs (Jinja, mapping, XCom, retries), the durable ledger), then these integration tests: the examples run
# end to end with `airflow dags test`, the provider as `airflow providers` lists it, its connection form as
# the API server shows it, and the leg's own versions against the matrix.
CORE_MARKERS := not integration
CORE_INTEGRATION := tests/integration/test_example_dags.py tests/integration/test_provider_cli.py \
	tests/integration/test_ui.py tests/integration/test_matrix.py

test-matrix: pythons test test-legs

# Every leg but the main one; the older Airflow releases; the newest Airflow on the other Pythons.
test-legs: $(addprefix test-airflow-,$(LEGS))
test-older: $(addprefix test-airflow-,$(filter-out $(NEWEST)-%,$(LEGS)))
test-pythons: $(addprefix test-airflow-,$(filter $(NEWEST)-%,$(LEGS)))

# Every interpreter the legs need, found or named (all of them at once, before anything runs).
pythons:
	$(FIND_PYTHON) --check $(sort $(foreach leg,$(LEGS),$(call leg-python,$(leg))))

# One line per leg, main leg first: LEG full|core (tests/integration/test_matrix.py reads it).
matrix:
	@$(foreach leg,$(MAIN_LEG) $(LEGS),echo "$(leg) $(call leg-kind,$(leg))";)

# Each leg's temporary files in its venv: other pytest sessions on the machine prune /tmp/pytest-of-$USER.
LEG_PYTEST = KIBO_MATRIX_LEG=$* .venv-airflow-$*/bin/pytest -p no:cacheprovider --basetemp=.venv-airflow-$*/tmp

# A core leg is two pytest runs (`-m` would deselect CORE_INTEGRATION from the first); the leg's wall time
# is printed at its end.
test-airflow-%: .venv-airflow-%/.installed
	start=$$(date +%s); \
	$(if $(filter core,$(call leg-kind,$*)),\
	  $(LEG_PYTEST) $(PYTEST_UNIT_PARALLEL) -m "$(call leg-markers,$*) and $(CORE_MARKERS)" tests/unit && \
	  $(LEG_PYTEST) $(PYTEST_PARALLEL) -m "$(call leg-markers,$*)" $(CORE_INTEGRATION),\
	  $(LEG_PYTEST) $(PYTEST_PARALLEL) -m "$(call leg-markers,$*)"); \
	rc=$$?; echo "leg $*: $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

# Kept after the run (not an intermediate file to delete): the venv is up to date.
.PRECIOUS: .venv-airflow-%/.installed
.venv-airflow-%/.installed: requirements/airflow-%.lock pyproject.toml
	$(call venv-from-lock,.venv-airflow-$*,requirements/airflow-$*.lock,$(call leg-python,$*))

# Production-shaped Airflow: CeleryExecutor with two workers, PostgreSQL, Redis and a triggerer, all on
# 127.0.0.1 (tests/integration/test_distributed.py; installs postgresql and redis-server with apt-get when
# missing).
# Its own venv from its own lock (dev.lock plus Celery and psycopg2), so `make test` stays as it is.
test-distributed: .venv-distributed/.installed
	# A basetemp of its own: other pytest sessions on the machine prune /tmp/pytest-of-$$USER while this runs.
	.venv-distributed/bin/pytest -p no:cacheprovider -s --basetemp=.pytest-distributed -m distributed \
	  tests/integration/test_distributed.py tests/integration/test_tenant_budget_distributed.py

.venv-distributed/.installed: requirements/distributed.lock pyproject.toml
	$(call venv-from-lock,.venv-distributed,requirements/distributed.lock)

clean:
	rm -rf $(VENV) .venv-airflow-* .venv-distributed .venv-docs .venv-build docs/_build .pytest-distributed .airflow-demo .pytest_cache .mypy_cache .ruff_cache dist
