# kv: `make run` serves the API on the memory backend, `make test` runs every check.
# Both bootstrap .venv from the lock files; `make test` also installs the servers it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q
# Debian packages the tests use: command -> package
SYSTEM_TOOLS := tarantool:tarantool redis-server:redis-server redis-cli:redis-tools docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver
# The profiles of compose.yaml; each must validate on its own.
COMPOSE_PROFILES := memory tarantool redis

.PHONY: run test check lint typecheck importcheck unit compose-check system-deps lock clean bench

run: $(VENV)/.run-installed
	$(BIN)/kv serve

test: $(VENV)/.dev-installed system-deps check compose-check
	$(BIN)/pytest

check: lint typecheck importcheck

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

importcheck: $(VENV)/.dev-installed
	$(BIN)/lint-imports

unit: $(VENV)/.dev-installed
	$(BIN)/pytest tests/unit

# Parses and validates compose.yaml per profile (no Docker engine needed); docker-compose 1.29
# rejects unknown keys and bad values, so a typo fails here rather than at `up`.
compose-check: system-deps
	@for profile in $(COMPOSE_PROFILES); do \
		docker-compose -f compose.yaml --profile $$profile config -q || exit 1; \
		echo "compose.yaml: profile $$profile is valid"; done

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

# Not part of `make test`: kv against the Starlette and raw-ASGI floors on every backend, at
# saturation and at a fixed rate, its bulk operations, GC, listing and RSS (~25 minutes).
# Quick: make bench BENCH_ARGS="--rounds 1 --duration 2 --quick"
bench: $(VENV)/.bench-installed
	@$(MAKE) --no-print-directory system-deps SYSTEM_TOOLS="$(SYSTEM_TOOLS) wrk:wrk hey:hey taskset:util-linux"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

$(VENV)/.bench-installed: requirements-bench.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements-bench.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@touch $@ $(VENV)/.dev-installed $(VENV)/.run-installed

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
	uv pip compile pyproject.toml build-requirements.in --extra test --extra dev --extra bench --python-version 3.11 --generate-hashes -q -o requirements-bench.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
