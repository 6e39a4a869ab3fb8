"""The repository is self-contained: every relative link of every markdown file leads to a file
(and heading) inside it, every "§" reference names a heading that exists, and nothing points
at documents outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# A "§" reference is written `docs/<file>.md §<Heading text>` and must name a real heading.
SECTION_REFERENCE = re.compile(r"([\w./-]+\.md) §([^\n.;,)]+)")
OUTSIDE = re.compile(r"\.\./shared|\bDESIGN\.md\b|\bDESIGN §|\bissue \d+|\bissues? #\d+", re.I)


# Third-party browser code copied into the package as published (minified): not ours to check.
VENDORED = "consumer/entrypoints/console/static/vendor/"


def tracked(*suffixes: str) -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [
        ROOT / name
        for name in names
        if name.endswith(suffixes) and (ROOT / name).is_file() and not name.startswith(VENDORED)
    ]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {slug(h) for h in re.findall(r"^#{1,6} +(.+?) *$", text, re.MULTILINE)}


MARKDOWN = tracked(".md")


def test_there_are_markdown_files_to_check() -> None:
    assert ROOT / "docs" / "contract.md" in MARKDOWN


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_every_relative_link_leads_to_a_file_and_heading_in_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # an absolute URL (none point at our own documents)
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
        assert resolved.exists(), f"{path.name}: {target} does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in anchors(resolved), f"{path.name}: no heading #{fragment}"


def test_every_section_reference_names_an_existing_heading() -> None:
    for path in tracked(".md", ".py", ".toml", ".json", ".js", ".mjs"):
        for file_name, heading in SECTION_REFERENCE.findall(path.read_text(encoding="utf-8")):
            target = ROOT / file_name
            assert target.exists(), f"{path.name}: {file_name} does not exist"
            assert slug(heading) in anchors(target), f"{path.name}: no §{heading} in {file_name}"


def test_every_section_sign_is_such_a_reference() -> None:
    for path in tracked(".md", ".py", ".toml", ".json", ".js", ".mjs", ".txt", "Makefile"):
        if path == Path(__file__):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            signs = line.count("§")
            assert signs == len(SECTION_REFERENCE.findall(line)), f"{path.name}: {line!r}"


def test_nothing_points_outside_the_repository() -> None:
    checked = tracked(".md", ".py", ".toml", ".json", ".js", ".mjs", ".yml", ".cfg", "Makefile")
    checked += [ROOT / ".ci" / "run", ROOT / "Dockerfile"]
    for path in checked:
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not OUTSIDE.search(line), f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
