# The README's two commands are `make run` and `make test`; everything else is a building block (`make help`).
# Python 3.11 or newer: the first of python3.11 ... python3.14, python3 that is new enough (PYTHON=... overrides).
PYTHON ?= $(shell for candidate in python3.11 python3.12 python3.13 python3.14 python3; do \
	command -v $$candidate >/dev/null 2>&1 && $$candidate -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$candidate; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PHONY_HELPERS := print-python
.PHONY: $(PHONY_HELPERS) help run test install system-tools sdk migrate lint backtest api dashboard scheduler clean

## The targets and what they do.
help:
	@awk '/^## /{doc = doc (doc ? " " : "") substr($$0, 4); next} \
		/^[a-z-]+:/{split($$0, t, ":"); if (doc) printf "  make %-13s %s\n", t[1], doc; doc = ""; next} /^[A-Z_]+ *[?:]?=/{next} {doc = ""}' $(MAKEFILE_LIST)

## requirements-research.txt (Ray, Optuna: docs/RESEARCH.md) is for research runs and their tests only; the bot's
## processes never import it (the Docker image installs requirements.txt / requirements-api.txt alone).
$(STAMP): requirements.txt requirements-api.txt requirements-dev.txt requirements-research.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer is required (none of python3.11..python3.14, python3 is); set PYTHON=/path/to/python"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-api.txt -r requirements-dev.txt \
		-r requirements-research.txt
	@touch $(STAMP)

print-python:
	@echo $(PYTHON)

## Create .venv and install the pinned requirements (bot, API, tests).
install: $(STAMP)

## Upbit's official SDK in its own environment, for the conformance test only (it needs websockets<16; the bot
## pins 17 and never imports it): tests/test_upbit_sdk_conformance.py runs it as a subprocess against the fakes.
SDK_VENV := .venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed
$(SDK_STAMP): requirements-sdk.txt
	@test -x $(SDK_VENV)/bin/python || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SDK_VENV)/bin/python -m pip install --quiet -r requirements-sdk.txt
	@touch $(SDK_STAMP)

## Upbit's official SDK in .venv-sdk (for the conformance test; make test runs it).
sdk: $(SDK_STAMP)

## Debian tools some tests drive (promtool, prometheus, docker-compose, redis-server, chromium for the browser
## tests): Debian packages, installed when missing and this is root with apt-get; otherwise those tests skip with a
## reason (and fail under CI=true).
SYSTEM_TOOLS := promtool prometheus docker-compose redis-server chromium
system-tools:
	@if (for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || exit 1; done); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing prometheus, docker-compose, redis-server and chromium (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus docker-compose redis-server chromium >/dev/null; \
	else echo "note: some of $(SYSTEM_TOOLS) missing; their tests will skip (apt-get install prometheus docker-compose redis-server chromium)"; fi

## Create or upgrade the database named by DATABASE_URL (default: the embedded SQLite file).
migrate: install
	$(BIN)/alembic upgrade head

## The main job on the embedded default: SQLite, paper mode, bundled data, no keys, no network.
REPLAY_METRICS_PORT ?= 9102
run: migrate
	SCHEDULER_METRICS_PORT=$(REPLAY_METRICS_PORT) $(BIN)/python scheduler_main.py --replay --speed max

## The whole test suite (PostgreSQL tests included; they fail rather than skip under CI=true), after the linter and
## the type checker (mypy.ini: src and backend/app).
test: install system-tools sdk
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

## A backtest of the bot's own settings on the bundled candles (python backtest.py --help for more).
backtest: install
	$(BIN)/python backtest.py

## The backend API on API_HOST:API_PORT (from the environment or .env; default 127.0.0.1:8000).
api: migrate
	$(BIN)/python -m backend.app.main

## After `make run`: the dashboard over what the replay wrote (data/replay.db, read-only, this machine only).
REPLAY_DB ?= data/replay.db
DASHBOARD_PORT ?= 8000
dashboard: install
	@test -f $(REPLAY_DB) || { echo "error: $(REPLAY_DB) does not exist yet: run \`make run\` first"; exit 1; }
	@echo "dashboard: http://127.0.0.1:$(DASHBOARD_PORT)/dashboard/ (replay of $(REPLAY_DB); Ctrl+C to stop)"
	DATABASE_URL=sqlite+aiosqlite:///$(REPLAY_DB) TRADING_MODE=replay API_PUBLIC_READ=true API_HOST=127.0.0.1 \
		API_PORT=$(DASHBOARD_PORT) $(BIN)/python -m backend.app.main

## The scheduler daemon with the settings in .env (paper mode unless TRADING_MODE says otherwise).
scheduler: migrate
	$(BIN)/python scheduler_main.py

## Lint, formatting (code blocks in docs/*.md included) and types.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Remove the virtual environment and the tool caches.
clean:
	rm -rf $(VENV) $(SDK_VENV) .pytest_cache .ruff_cache .mypy_cache
