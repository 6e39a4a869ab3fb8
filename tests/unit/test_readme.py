"""The README documents every setting and every command there is."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(field: str) -> None:
    assert f"`BATCHOPS_{field.upper()}`" in README, f"BATCHOPS_{field.upper()} is undocumented"


def test_the_first_screen_gives_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:20])
    assert "make demo" in first_screen
    assert "make test" in first_screen
