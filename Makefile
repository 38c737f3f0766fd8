# kv: `make run` serves the API on the memory backend, `make test` runs every check.
# Both bootstrap .venv from the lock files; `make test` also installs the servers it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q
# Debian packages the tests start: command -> package
SYSTEM_TOOLS := tarantool:tarantool redis-server:redis-server redis-cli:redis-tools chromium:chromium

.PHONY: run test check lint typecheck importcheck unit system-deps lock clean

run: $(VENV)/.run-installed
	$(BIN)/kv serve

test: $(VENV)/.dev-installed system-deps check
	$(BIN)/pytest

check: lint typecheck importcheck

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

importcheck: $(VENV)/.dev-installed
	$(BIN)/lint-imports

unit: $(VENV)/.dev-installed
	$(BIN)/pytest tests/unit

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		rm -rf $(VENV); \
		echo "installing python3-venv (needed to create $(VENV))"; \
		$(SUDO) apt-get update -q && $(APT_INSTALL) python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.run-installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.dev-installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@touch $@ $(VENV)/.run-installed

# Installs with apt only what is missing, so a machine that has everything is not touched.
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(APT_INSTALL) $$missing; fi

# Re-pin after editing pyproject.toml's dependencies (needs `uv` on PATH).
lock:
	uv pip compile pyproject.toml build-requirements.in --python-version 3.11 --generate-hashes -q -o requirements.lock
	uv pip compile pyproject.toml build-requirements.in --extra test --extra dev --python-version 3.11 --generate-hashes -q -o requirements-dev.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
