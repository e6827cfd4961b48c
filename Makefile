# The README's two commands are `make run` and `make test`; everything else is a building block.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install system-tools migrate lint backtest api dashboard scheduler clean

$(STAMP): requirements.txt requirements-api.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

## Tools some tests drive (promtool, prometheus, docker-compose, redis-server, chromium for the dashboard's browser
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
run: migrate
	$(BIN)/python scheduler_main.py --replay --speed max

## The whole test suite (PostgreSQL tests included; they fail rather than skip under CI=true), after the linter and
## the type checker (mypy.ini: src and backend/app).
test: install system-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

backtest: install
	$(BIN)/python backtest.py

api: migrate
	$(BIN)/uvicorn backend.app.main:app --host 127.0.0.1 --port 8000 --ws-per-message-deflate false

## The newcomer path: after `make run`, the dashboard over what the replay wrote (data/replay.db, replay mode,
## read-only without log-in on this machine only): http://127.0.0.1:8000/dashboard/
REPLAY_DB ?= data/replay.db
DASHBOARD_PORT ?= 8000
dashboard: install
	@test -f $(REPLAY_DB) || { echo "error: $(REPLAY_DB) does not exist yet: run \`make run\` first"; exit 1; }
	@echo "dashboard: http://127.0.0.1:$(DASHBOARD_PORT)/dashboard/ (replay of $(REPLAY_DB); Ctrl+C to stop)"
	DATABASE_URL=sqlite+aiosqlite:///$(REPLAY_DB) TRADING_MODE=replay API_PUBLIC_READ=true API_HOST=127.0.0.1 \
		API_PORT=$(DASHBOARD_PORT) $(BIN)/python -m backend.app.main

scheduler: migrate
	$(BIN)/python scheduler_main.py

## Lint, formatting (code blocks in docs/*.md included) and types.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
