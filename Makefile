# Isthmus — the two commands a new user needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Line coverage of the whole suite may not drop below this percent; raise it, never lower it.
COV_FLOOR := $(shell cat .coverage-floor)
COV_ARGS := --cov=isthmus --cov-report=term:skip-covered --cov-fail-under=$(COV_FLOOR)

.PHONY: help install demo test lint system-deps node-deps slurm-up slurm-down bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## Create/update .venv with Isthmus and everything the tests need

demo: install ## Run a bridge on 127.0.0.1:8000 with a simulated-cluster edge named demo
	$(BIN)/isthmus demo --host 127.0.0.1 --port 8000 --log-level warning

system-deps: ## Install Debian packages the tests need (Slurm, MariaDB, munge, chromium, wrk) when root
	@scripts/system-deps.sh

# The OIDC tests' identity provider: the npm package oidc-provider, installed next to its script
# (never globally) from the committed package-lock.json; npm ci again when the lock changes.
OIDC_PROVIDER := src/isthmus/testing/oidc_provider
$(OIDC_PROVIDER)/node_modules/.package-lock.json: $(OIDC_PROVIDER)/package-lock.json $(OIDC_PROVIDER)/package.json
	@command -v npm >/dev/null || { echo "node-deps: npm is missing: install Node.js 20 or later" >&2; exit 1; }
	npm ci --prefix $(OIDC_PROVIDER) --no-audit --no-fund --loglevel=error

node-deps: $(OIDC_PROVIDER)/node_modules/.package-lock.json ## Install the OIDC test provider (npm, local)

lint: install ## ruff, then mypy --strict on src/ (configured in pyproject.toml)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m mypy

test: install system-deps node-deps lint ## Run the whole suite (starts what it needs: Slurm, bridges, edges, chromium)
	$(BIN)/python -m pytest $(COV_ARGS) $(PYTEST_ARGS)

slurm-up: install ## Start a private single-node Slurm; prints `export SLURM_CONF=...` last
	@$(BIN)/python -m isthmus.testing.slurm up

slurm-down: ## Stop the Slurm that slurm-up started
	@$(BIN)/python -m isthmus.testing.slurm down

bench: install system-deps ## Run the benchmarks (JSON on stdout; see bench/RESULTS.md)
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/staging.py
	$(BIN)/python bench/edges.py
	$(BIN)/python bench/bridges.py
	$(BIN)/python bench/pilots.py

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage .coverage.* test-artifacts src/*.egg-info
