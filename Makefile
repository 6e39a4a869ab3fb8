# Everything runs inside .venv, which these targets create on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The example custom handler (append_order_note), a plugin of its own: the tests, the fault suite
# and the chaos soak publish batches for it; the batchops package and its image do not hold it.
EXAMPLE_PLUGIN := examples/handlers

.PHONY: install demo test lint types unit schema asyncapi interop floors clean

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

## Lint, type-check, validate the AsyncAPI document and run every test against the real
## services; then the Node.js interop example when node is on PATH.
test: lint types asyncapi
	$(BIN)/python -m pytest
	@if command -v node >/dev/null 2>&1; then $(MAKE) --no-print-directory interop; \
	else echo "make test: node is not on PATH, the Node.js interop example did not run"; fi

## The AsyncAPI document through the official parser (@asyncapi/parser, installed here).
asyncapi:
	cd tools/asyncapi && npm ci --no-audit --no-fund --silent
	node tools/asyncapi/validate.mjs contracts/schemas/asyncapi.json

## examples/node against the real broker and `batchops consume` (needs node and npm).
interop: install
	$(BIN)/python -m pytest -m interop tests/e2e/test_node_interop.py

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
	$(FLOORS)/bin/python -m pytest -m "not interop and not generated" tests/unit tests/integration

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
	rm -rf $(VENV) $(FLOORS) tools/asyncapi/node_modules examples/node/node_modules .mypy_cache .ruff_cache .pytest_cache *.egg-info $(EXAMPLE_PLUGIN)/*.egg-info
