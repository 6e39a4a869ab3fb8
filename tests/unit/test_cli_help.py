"""`batchops --help` and every command's help: a description, help on every option with its
default, and the environment variables generated from the settings."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.config import Settings
from consumer.entrypoints.cli import build_parser, configuration_errors


def commands(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{path} {name}".strip(), sub))
                found += commands(sub, f"{path} {name}".strip())
    return found


COMMANDS = commands(build_parser())


def test_the_top_level_help_lists_every_environment_variable_with_its_default() -> None:
    text = build_parser().format_help()
    for name in Settings.model_fields:
        assert f"BATCHOPS_{name.upper()} " in text
    assert "default postgresql+asyncpg://localhost/batchops" in text
    assert "exit codes: 0 done" in text


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_has_a_description_and_every_option_a_help(
    name: str, parser: argparse.ArgumentParser
) -> None:
    assert parser.description, f"`batchops {name}` has no description"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        assert action.help, f"`batchops {name}` {action.option_strings or action.dest}: no help"


def test_defaults_are_shown() -> None:
    seed = dict(COMMANDS)["seed"].format_help()
    listing = dict(COMMANDS)["batches list"].format_help()
    assert "(default: 100)" in seed
    assert "(default: 20)" in listing


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("database_url", "postgresql://u@h/db", "must start with postgresql+asyncpg://"),
        ("database_url", "garbage", "is not a URL"),
        ("amqp_url", "http://localhost:5672", "is not an amqp:// or amqps:// URL"),
        ("amqp_url", "amqp://a/,redis://b", "'redis://b' is not an amqp:// or amqps:// URL"),
    ],
)
def test_a_wrong_url_is_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate({variable: value})

    (line,) = configuration_errors(raised.value)
    assert line.startswith(f"BATCHOPS_{variable.upper()}: ")
    assert expected in line
    assert "\n" not in line


def test_several_cluster_nodes_are_one_valid_amqp_url() -> None:
    assert Settings(amqp_url="amqp://a:5672/,amqps://b:5671/").amqp_url
