"""The committed OpenAPI document (contracts/schemas/openapi.json) is the one the API serves."""

from __future__ import annotations

import json

import pytest

from consumer.entrypoints.http.app import openapi_document
from contracts.schema import COMMITTED_SCHEMA_DIR, render

COMMITTED_OPENAPI = COMMITTED_SCHEMA_DIR / "openapi.json"


@pytest.mark.generated
def test_the_committed_openapi_document_is_what_the_api_serves() -> None:
    # Compared as JSON: pydantic releases within our floor spell 0 and 0.0 differently.
    committed = json.loads(COMMITTED_OPENAPI.read_text(encoding="utf-8"))
    assert committed == json.loads(render(openapi_document())), (
        "openapi.json is out of date: run `make schema`"
    )


def test_the_openapi_document_points_integrators_at_the_contract() -> None:
    assert "docs/contract.md" in openapi_document()["info"]["description"]


def test_every_error_response_is_described_as_problem_json() -> None:
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    content = response.get("content", {})
                    assert list(content) == ["application/problem+json"], (path, method, status)
