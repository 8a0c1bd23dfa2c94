# One command per task; CI runs `make test` (see .ci/run).
SHELL := /bin/bash
UV := uv

.PHONY: bootstrap sync lint format test demo stack-down

bootstrap:  ## install system packages, uv and TimescaleDB (idempotent)
	scripts/bootstrap

sync: bootstrap  ## the workspace venv, exactly as uv.lock says
	$(UV) sync --frozen

lint: sync  ## ruff and mypy (strict)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: sync
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

test: lint  ## bootstrap, lint, the whole suite against real servers
	$(UV) run pytest

demo: sync  ## local stack up, schema migrated, signed frames through the broker
	$(UV) run fleet stack up
	$(UV) run fleet db migrate
	$(UV) run fleet demo

stack-down:
	$(UV) run fleet stack down
