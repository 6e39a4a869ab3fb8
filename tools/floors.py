"""Print the pip requirements (one per line) of the floor test run: every direct dependency of
batchops (and of its `tracing` extra) pinned to the lowest version pyproject.toml allows, plus
the test tools the unit and integration tests need, as declared.

Usage: python tools/floors.py pyproject.toml"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# The `dev` extras the unit and integration tests import (linters, schemathesis and
# testcontainers serve other targets).
TEST_TOOLS = {
    "httpx",
    "hypothesis",
    "jsonschema-rs",
    "kubernetes-validate",
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "pytest-xdist",
    "pyyaml",
    "trustme",
}
FLOOR = re.compile(r"^([A-Za-z0-9_.-]+(?:\[[^\]]+\])?)\s*>=\s*([^,;\s]+)\s*(;.+)?$")


def floor_pin(requirement: str) -> str:
    """`name[extra]>=X` as `name[extra]==X` (an environment marker kept); anything else is not
    a floor and is refused."""
    match = FLOOR.match(requirement.strip())
    if match is None:
        raise SystemExit(f"floors: {requirement!r} is not of the form name>=version")
    marker = f" {match[3]}" if match[3] else ""
    return f"{match[1]}=={match[2]}{marker}"


def name_of(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    pins = [floor_pin(r) for r in [*project["dependencies"], *extras["tracing"]]]
    tools = [r for r in extras["dev"] if name_of(r) in TEST_TOOLS]
    missing = TEST_TOOLS - {name_of(r) for r in tools}
    if missing:
        raise SystemExit(f"floors: the dev extra no longer lists {sorted(missing)}")
    return pins + tools


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]))))
