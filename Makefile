# Everything runs inside .venv, which these targets create on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint types unit schema asyncapi interop pgbouncer pgbouncer-test floors clean

$(BIN)/batchops: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/batchops

install: $(BIN)/batchops

## Run the service end to end against the local RabbitMQ and PostgreSQL.
demo: install
	$(BIN)/python -m consumer.demo

## Lint, type-check, validate the AsyncAPI document and run every test against the real
## services (the fault suite's RabbitMQ cluster and PostgreSQL standby included), then the
## integration tests again through PgBouncer; then the Node.js interop example when node is on
## PATH.
test: lint types asyncapi pgbouncer
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory pgbouncer-test
	@if command -v node >/dev/null 2>&1; then $(MAKE) --no-print-directory interop; \
	else echo "make test: node is not on PATH, the Node.js interop example did not run"; fi

## The AsyncAPI document through the official parser (@asyncapi/parser, installed here).
asyncapi:
	cd tools/asyncapi && npm ci --no-audit --no-fund --silent
	node tools/asyncapi/validate.mjs contracts/schemas/asyncapi.json

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
	BATCHOPS_TEST_PGBOUNCER=1 $(BIN)/python -m pytest tests/integration

## The unit and integration tests on the lowest versions pyproject.toml allows (a venv of its
## own, made once and kept while pyproject.toml does not change).
FLOORS := .venv-floors
$(FLOORS)/.installed: pyproject.toml tools/floors.py
	test -x $(FLOORS)/bin/python || $(PYTHON) -m venv $(FLOORS)
	$(FLOORS)/bin/pip install --quiet --upgrade pip
	$(PYTHON) tools/floors.py pyproject.toml > $(FLOORS)/requirements.txt
	$(FLOORS)/bin/pip install --quiet -r $(FLOORS)/requirements.txt
	$(FLOORS)/bin/pip install --quiet --no-deps -e .
	touch $@

floors: $(FLOORS)/.installed
	$(FLOORS)/bin/python -m pytest -m "not interop and not generated" tests/unit tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
	rm -rf $(VENV) $(FLOORS) tools/asyncapi/node_modules examples/node/node_modules .mypy_cache .ruff_cache .pytest_cache *.egg-info
