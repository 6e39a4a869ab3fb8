# Everything runs inside .venv, which these targets create on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The example custom handler (append_order_note), a plugin of its own: the tests, the fault suite
# and the chaos soak publish batches for it; the batchops package and its image do not hold it.
EXAMPLE_PLUGIN := examples/handlers

.PHONY: install demo test lint types unit schema asyncapi interop pgbouncer pgbouncer-test floors \
	clean browser rules console-screenshots web-assets

$(BIN)/batchops: pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -e $(EXAMPLE_PLUGIN)
	touch $(BIN)/batchops

install: $(BIN)/batchops

## Run the service end to end against the local RabbitMQ and PostgreSQL.
demo: install
	$(BIN)/python examples/demo.py

## Lint, type-check, validate the AsyncAPI document and the alert rules, and run every test
## against the real services (the console's in Chromium, the fault suite's RabbitMQ cluster and
## PostgreSQL standby included), then the integration tests again through PgBouncer; then the
## Node.js interop example when node is on PATH.
test: lint types asyncapi rules browser pgbouncer
	$(BIN)/python -m pytest -n 2 --dist loadgroup
	$(MAKE) --no-print-directory pgbouncer-test
	@if command -v node >/dev/null 2>&1; then $(MAKE) --no-print-directory interop; \
	else echo "make test: node is not on PATH, the Node.js interop example did not run"; fi

## The AsyncAPI document through the official parser (@asyncapi/parser, installed here).
asyncapi:
	cd tools/asyncapi && npm ci --no-audit --no-fund --silent
	node tools/asyncapi/validate.mjs contracts/schemas/asyncapi.json

## Debian's Chromium and its chromium-driver for the console's browser tests (installed with
## apt-get when missing; Selenium drives them, nothing is downloaded by the tests).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; fi

## The Prometheus alert rules in deploy/ through promtool (Debian's prometheus package).
rules:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; fi
	promtool check rules deploy/prometheus/batchops-alerts.yml

## Refresh the screenshots of docs/console.md from the console's browser tests.
console-screenshots: install browser
	BATCHOPS_CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest tests/e2e/test_console.py

## Copy htmx, Swagger UI and ReDoc from npm into the package (after a version change in
## tools/web-assets/package.json); the copies are committed.
web-assets:
	cd tools/web-assets && npm ci --no-audit --no-fund --silent && node vendor.mjs

## examples/node against the real broker and `batchops consume` (needs node and npm).
interop: install
	$(BIN)/python -m pytest -m interop tests/e2e/test_node_interop.py

## Debian's pgbouncer package, installed when missing: the PgBouncer tests run their own.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || \
	  { apt-get update -qq && apt-get install -y -qq pgbouncer; }

## The integration tests with the service reaching PostgreSQL through a PgBouncer of their own
## in transaction pooling mode.
pgbouncer-test: install pgbouncer
	BATCHOPS_TEST_PGBOUNCER=1 $(BIN)/python -m pytest -n 2 --dist loadfile tests/integration

## The unit and integration tests on the lowest versions pyproject.toml allows (a venv of its
## own, made once and kept while pyproject.toml does not change).
FLOORS := .venv-floors
$(FLOORS)/.installed: pyproject.toml tools/floors.py $(EXAMPLE_PLUGIN)/pyproject.toml
	test -x $(FLOORS)/bin/python || $(PYTHON) -m venv $(FLOORS)
	$(FLOORS)/bin/pip install --quiet --upgrade pip
	$(PYTHON) tools/floors.py pyproject.toml > $(FLOORS)/requirements.txt
	$(FLOORS)/bin/pip install --quiet -r $(FLOORS)/requirements.txt
	$(FLOORS)/bin/pip install --quiet --no-deps -e .
	$(FLOORS)/bin/pip install --quiet --no-deps -e $(EXAMPLE_PLUGIN)
	touch $@

floors: $(FLOORS)/.installed
	$(FLOORS)/bin/python -m pytest -n 2 --dist loadfile \
	  -m "not interop and not generated and not peer" tests/unit tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest tests/unit

## Rewrite the committed JSON Schemas, AsyncAPI and OpenAPI documents after a contract change.
schema: install
	$(BIN)/batchops schema --output contracts/schemas
	$(BIN)/batchops schema --asyncapi --output contracts/schemas
	$(BIN)/batchops schema --openapi --output contracts/schemas

clean:
	rm -rf $(VENV) $(FLOORS) tools/asyncapi/node_modules tools/web-assets/node_modules examples/node/node_modules .mypy_cache .ruff_cache .pytest_cache *.egg-info $(EXAMPLE_PLUGIN)/*.egg-info
