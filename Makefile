# tillpoint — the project's verbs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run worker migrate test lint fmt typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/tillpoint: $(UV) pyproject.toml uv.lock
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(BIN)/tillpoint ## create .venv with the package, its `tillpoint` command and the dev tools

run: install ## serve on the embedded defaults (SQLite, in-process broker) at 127.0.0.1:8000 (HOST=, PORT= to change)
	$(BIN)/tillpoint serve --host $(HOST) --port $(PORT)

worker: install ## run the background worker (outbox relay, webhooks, janitor, consumers)
	$(BIN)/tillpoint worker

migrate: install ## apply database migrations to TILLPOINT_DATABASE_URL
	$(BIN)/tillpoint migrate

lint: install ## ruff lint, format check, mypy --strict and the layer contracts (lint-imports)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install ## format and autofix
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: lint ## lint, then run the whole test suite (SQLite always, PostgreSQL/RabbitMQ when reachable; mandatory with CI=true)
	$(BIN)/pytest

bench: install ## run the benchmarks against local PostgreSQL/RabbitMQ and write docs/performance.md
	$(BIN)/python -m bench

clean: ## remove the virtualenvs, caches and local databases
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache tillpoint.db*
