# One command per task; CI runs `make test` (see .ci/run).
SHELL := /bin/bash
UV := uv

.PHONY: bootstrap sync lint format test demo stack-down

bootstrap:  ## install system packages, uv and TimescaleDB (idempotent)
	scripts/bootstrap

sync: bootstrap  ## the workspace venv, exactly as uv.lock says
	$(UV) sync --frozen

lint: sync  ## ruff, mypy (strict) and the import contracts
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

format: sync
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

test: lint  ## bootstrap, lint, the whole suite against real servers
	$(UV) run pytest

demo: sync  ## the whole chain: stack, feed, ingest, serve, 200 buses; the map URL and a live status (DURATION=60: exits)
	$(UV) run fleet demo run $(if $(DURATION),--duration $(DURATION))

.PHONY: screenshot
screenshot: sync  ## docs/map.png: the live map of a running demo, in headless Chromium
	$(UV) run fleet demo screenshot docs/map.png

stack-down:
	$(UV) run fleet stack down
