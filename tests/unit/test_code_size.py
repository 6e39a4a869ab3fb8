"""The size rule of docs/architecture.md: no production function over 50 lines, no module over
400 (migrations aside), so that each piece reads in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("consumer", "publisher", "contracts")
LONGEST_FUNCTION = 50
LONGEST_MODULE = 400


def production_modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.relative_to(ROOT).parts
    )


def test_the_packages_are_found() -> None:
    assert len(production_modules()) > 50


@pytest.mark.parametrize("path", production_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_or_function_is_too_long(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    too_long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert not too_long, f"functions over {LONGEST_FUNCTION} lines: {too_long}"
    lines = len(source.splitlines())
    assert lines <= LONGEST_MODULE, f"{lines} lines, over {LONGEST_MODULE}"
