"""How `batchops --help` reads: every option with its default, and the environment variables
listed from the Settings model itself (so the list cannot fall behind)."""

from __future__ import annotations

import argparse
import importlib
import textwrap
from collections.abc import Callable
from typing import Any, TypeAlias

from pydantic_core import PydanticUndefined

from consumer.config import Settings

ENV_PREFIX = "BATCHOPS_"
Command = Callable[[Settings, argparse.Namespace], int]
# A string: argparse's class is generic only to type checkers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (line breaks kept), defaults shown after each option's help."""


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return repr(field.default_factory())
    if field.default is PydanticUndefined or field.default is None:
        return "unset"
    return str(field.default)


def environment_help() -> str:
    """The epilog of the top-level help: every setting as a variable, with its default."""
    names = {name: f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    width = max(len(variable) for variable in names.values())
    lines = [
        "environment variables (also read from a .env file in the working directory; what each",
        "means is in the README's Configuration table):",
    ]
    for name, field in Settings.model_fields.items():
        lines.append(f"  {names[name]:<{width}}  default {_default(field)}")
    lines += [
        "",
        "exit codes: 0 done, 1 failed (a service unreachable or refusing, nothing matched),",
        "2 bad input (file, argument or configuration), 3 timeout, 130 interrupted (Ctrl-C)",
    ]
    return "\n".join(lines)


def lazy(module: str, function: str) -> Command:
    """A command whose module is imported only when it runs, so that `--help` starts fast."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(module), function)
        return command(settings, args)

    return run


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def command_parser(
    commands: Commands, name: str, text: str, details: str = ""
) -> argparse.ArgumentParser:
    """A command with its one-line help, and that line (plus any details) as its description."""
    return commands.add_parser(
        name,
        help=text,
        description=f"{text}.\n\n{textwrap.fill(details, 88)}" if details else f"{text}.",
        formatter_class=HelpFormatter,
    )


def command_group(commands: Commands, name: str, text: str) -> Commands:
    group = command_parser(commands, name, text)
    group.set_defaults(group_parser=group)
    return group.add_subparsers(metavar="ACTION")
