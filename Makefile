# One command per task; CI runs `make test` (see .ci/run).
SHELL := /bin/bash
UV := uv

.PHONY: bootstrap sync lint format test demo stack-down bundle fuzz chaos

bootstrap:  ## install system packages, uv and TimescaleDB (idempotent)
	scripts/bootstrap

sync: bootstrap bundle  ## the workspace venv, exactly as uv.lock says
	$(UV) sync --frozen

# The live map (serve/map-ui): npm ci from the committed lockfile, then the
# esbuild build into the Python package; each step only when its inputs changed.
MAP_UI := serve/map-ui
MAP_BUNDLE := serve/src/fleet_serve/map/static/index.html

bundle: $(MAP_BUNDLE)  ## the live map's bundle, built from serve/map-ui (skipped when up to date)

$(MAP_UI)/node_modules/.package-lock.json: $(MAP_UI)/package-lock.json $(MAP_UI)/package.json
	cd $(MAP_UI) && npm ci --no-audit --no-fund

$(MAP_BUNDLE): $(MAP_UI)/node_modules/.package-lock.json $(MAP_UI)/build.mjs $(MAP_UI)/tsconfig.json $(wildcard $(MAP_UI)/src/*)
	cd $(MAP_UI) && npx tsc --noEmit && node build.mjs

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

chaos: sync  ## fault-injection suite (tests/chaos, ~15 min, not in `test`); table in .fleet/chaos/table.md
	$(UV) run pytest tests/chaos -m chaos

.PHONY: screenshot
screenshot: sync  ## docs/map.png: the live map of a running demo, in headless Chromium
	$(UV) run fleet demo screenshot docs/map.png

stack-down:
	$(UV) run fleet stack down

fuzz: sync  ## atheris in process, then 1,000,000 hostile payloads through the broker into a real ingest, then a long API walk
	$(UV) run fleet stack up
	$(UV) run fleet db migrate
	$(UV) run --group fuzz python -m fleet_devtools.fuzz_atheris .fleet/atheris-corpus -runs=200000
	$(UV) run fleet bench fuzz --payloads 1000000 --seeds .fleet/atheris-corpus
	FLEET_FUZZ_API_STEPS=400 $(UV) run pytest tests/test_api_fuzz_stateful.py -q
