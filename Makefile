# The two commands a new user needs (see README):
#   make night   - install everything, start Kafka + Prefect, run one whole simulated night end to end
#   make test    - install everything, check the code (make lint), start a test broker, run the test suite
#   make night-secure - the same night on the local secure deployment (no PLAINTEXT listener, a SCRAM user per
#                  service, the Prefect server behind basic auth)
# Everything lands in .venv/ and .alertdist/ inside this folder; `make stop` stops what `make night` started
# (and the public cluster and MirrorMaker 2 of the two-tier mode, when running).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
NIGHT_ARGS ?=
# pytest processes for `make test` (0: one process). Each test file stays in one process (--dist loadfile), so
# module fixtures (the 3-broker cluster, a published night) are built once; all share the one test broker.
PYTEST_WORKERS ?= 2

.PHONY: night night-secure schedule test lint setup setup-test stop status bench clean-state lock

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Every install takes its versions from constraints.txt (the whole environment, test tools included): a fresh
# machine gets what CI tested, and pip resolves nothing. `make lock` refreshes it on purpose.
$(VENV)/.installed-main: pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing Python packages into $(VENV) (first time only)..."
	$(BIN)/pip install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing Python packages and test tools into $(VENV) (first time only)..."
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	@touch $@ $(VENV)/.installed-main

setup: $(VENV)/.installed-main
	$(BIN)/alertdist kafka install
	-bash infra/install_prometheus.sh

setup-test: $(VENV)/.installed-test
	$(BIN)/alertdist kafka install
	bash infra/install_browser.sh
	bash infra/install_prometheus.sh

night: setup
	$(BIN)/alertdist kafka start
	$(BIN)/alertdist prefect start
	-$(BIN)/alertdist prometheus start
	$(BIN)/alertdist night $(NIGHT_ARGS)

# Starts (or reuses) the secure 3-node cluster and its own Prefect server itself: see `alertdist night --help`.
night-secure: setup
	$(BIN)/alertdist night --secure $(NIGHT_ARGS)

# The nights as production runs them: every deployment of prefect.yaml on its schedule, started by a process worker.
schedule: setup
	$(BIN)/alertdist kafka start
	$(BIN)/alertdist prefect start
	$(BIN)/alertdist prefect deploy
	$(BIN)/alertdist worker start
	-$(BIN)/alertdist prometheus start

# Each check runs even when an earlier one failed, so one run shows everything to fix.
lint: $(VENV)/.installed-test
	@status=0; \
	echo "ruff check ."; $(BIN)/ruff check --output-format concise . || { status=1; \
	  echo "make lint: ruff found problems (above). '$(BIN)/ruff check --fix .' fixes the ones marked [*]; fix the rest by hand" >&2; }; \
	echo "ruff format --check ."; $(BIN)/ruff format --check --output-format concise . || { status=1; \
	  echo "make lint: the files above are not formatted. '$(BIN)/ruff format .' formats them" >&2; }; \
	echo "lint-imports"; $(BIN)/lint-imports --no-cache || { status=1; \
	  echo "make lint: an import breaks a layering contract ([tool.importlinter] in pyproject.toml; report above). Move the import or the code it needs to the right layer" >&2; }; \
	echo "pyright"; $(BIN)/pyright || { status=1; \
	  echo "make lint: pyright cannot resolve an import (above; [tool.pyright] in pyproject.toml). Declare the missing package in pyproject.toml and constraints.txt (make lock), or fix the module path" >&2; }; \
	exit $$status

test: setup-test lint
	bash infra/with_test_services.sh $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

stop:
	-$(BIN)/alertdist prometheus stop
	-$(BIN)/alertdist worker stop
	-$(BIN)/alertdist prefect stop
	-$(BIN)/alertdist prefect stop --secure
	-$(BIN)/alertdist mirror stop
	-$(BIN)/alertdist kafka stop --two-tier
	-$(BIN)/alertdist kafka stop --secure-only

# Frees old nights: their Kafka topics and local archive files, all but the newest night (asks first).
clean-state: setup
	$(BIN)/alertdist clean

# Both are shown even when the first is down; the exit status is non-zero when either service is down.
status:
	@status=0; $(BIN)/alertdist kafka status || status=1; $(BIN)/alertdist prefect status || status=1; exit $$status

# Refresh constraints.txt: the newest versions pyproject.toml allows, resolved once in a scratch environment.
# Run `make test` on the result, then commit it.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -e ".[test]"
	.venv-lock/bin/pip freeze --exclude-editable > constraints.txt
	rm -rf .venv-lock
	@echo "constraints.txt refreshed ($$(wc -l < constraints.txt) packages): run make test, then commit it"
