# The two commands a new user needs (see README):
#   make night   - install everything, start Kafka + Prefect, run one whole simulated night end to end
#   make test    - install everything, start a test broker, run the test suite
# Everything lands in .venv/ and .alertdist/ inside this folder; `make stop` stops what `make night` started.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
NIGHT_ARGS ?=

.PHONY: night test setup setup-test stop status bench clean-state

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-main: pyproject.toml | $(BIN)/python
	@echo "Installing Python packages into $(VENV) (first time only)..."
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "Installing Python packages and test tools into $(VENV) (first time only)..."
	$(BIN)/pip install -q -e ".[test]"
	@touch $@ $(VENV)/.installed-main

setup: $(VENV)/.installed-main
	$(BIN)/alertdist kafka install

setup-test: $(VENV)/.installed-test
	$(BIN)/alertdist kafka install
	bash infra/install_browser.sh

night: setup
	$(BIN)/alertdist kafka start
	$(BIN)/alertdist prefect start
	$(BIN)/alertdist night $(NIGHT_ARGS)

test: setup-test
	bash infra/with_test_services.sh $(BIN)/pytest $(PYTEST_ARGS)

stop:
	-$(BIN)/alertdist prefect stop
	-$(BIN)/alertdist kafka stop

status:
	-$(BIN)/alertdist kafka status
	-$(BIN)/alertdist prefect status
