# Everything runs inside .venv, which these targets create on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint types unit schema clean

$(BIN)/batchops: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/batchops

install: $(BIN)/batchops

## Run the service end to end against the local RabbitMQ and PostgreSQL.
demo: install
	$(BIN)/python -m consumer.demo

## Lint, type-check and run every test against the real services.
test: lint types
	$(BIN)/python -m pytest

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
