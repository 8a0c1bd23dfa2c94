# One command per task; CI runs `make test` (see .ci/run).
SHELL := /bin/bash
UV := uv

.PHONY: bootstrap sync lint format test demo stack-down chaos

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

chaos: sync  ## fault-injection suite (tests/chaos, ~15 min, not in `test`); table in .fleet/chaos/table.md
	$(UV) run pytest tests/chaos -m chaos

DEMO_FEED := devtools/src/fleet_devtools/data/feeds/algeria

demo: sync  ## local stack up, migrated, demo feed imported; coaches on its trips through ingest
	$(UV) run fleet stack up
	$(UV) run fleet db migrate
	$(UV) run fleet demo
	$(UV) run fleet gtfs import $(DEMO_FEED) --operator demo-dz --keep 2
	$(UV) run fleet geofences import $(DEMO_FEED)/geofences.geojson --operator demo-dz --replace
	@# The demo's ingest session is removed afterwards: left on the broker it
	@# would queue every frame published later for a consumer that never returns.
	$(UV) run fleet ingest --instance demo --burst 5 & ingest=$$!; \
	  $(UV) run fleet simulate --operator demo-dz --register --feed $(DEMO_FEED) --trips all-active \
	    --delay-s 300 --duration 45; \
	  status=$$?; wait $$ingest || status=$$?; \
	  $(UV) run fleet ingest --instance demo --forget; exit $$status
	$(UV) run fleet live --operator demo-dz
	$(UV) run fleet events list --operator demo-dz --since 1h --limit 20

stack-down:
	$(UV) run fleet stack down
