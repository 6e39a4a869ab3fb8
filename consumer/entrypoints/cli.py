"""`batchops`: run, feed and look after the batchops service.

The wire contract (messages, events, HTTP API) is docs/contract.md in the batchops repository."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from consumer.config import Settings
from consumer.entrypoints.cli_help import (
    Commands,
    HelpFormatter,
    command_group,
    command_parser,
    environment_help,
    lazy,
)
from consumer.entrypoints.cli_operator import add_operator_commands
from consumer.entrypoints.exits import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CommandFailed,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        # `batchops` or a group such as `batchops batches` without its action.
        getattr(args, "group_parser", parser).print_help()
        return EXIT_BAD_INPUT
    try:
        settings = Settings()
    except ValidationError as exc:
        for line in configuration_errors(exc):
            print(f"batchops: invalid configuration: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from consumer.log_config import configure_logging

    # A service logs its libraries' warnings; a one-shot command reports in its own line.
    service = hasattr(args, "roles")
    configure_logging(
        settings.log_level, settings.log_format, libraries="WARNING" if service else "CRITICAL"
    )
    try:
        result: int = args.command(settings, args)
    except CommandFailed as exc:
        print(f"batchops: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nobody to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("batchops: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result


def configuration_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting, named as the variable an operator sets."""
    return [
        f"BATCHOPS_{'_'.join(str(part) for part in error['loc']).upper()}: "
        f"{error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchops",
        description=__doc__,
        epilog=environment_help(),
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(metavar="COMMAND")
    _add_setup_commands(commands)
    _add_service_commands(commands)
    _add_publish_command(commands)
    _add_maintenance_commands(commands)
    add_operator_commands(commands)
    return parser


def _add_setup_commands(commands: Commands) -> None:
    db = command_group(commands, "db", "the database schema")
    command_parser(
        db,
        "upgrade",
        "create the database if missing and run the migrations",
        "Idempotent: run it before every start of a new version.",
    ).set_defaults(command=_db_upgrade)

    seed = command_parser(
        commands,
        "seed",
        "load the demo marketplace into an empty database",
        "8 users (1 admin, 2 staff, 3 clients, 3 professionals), 3 professionals, 6 services "
        "and N orders; refuses a database that already holds users.",
    )
    seed.add_argument(
        "--orders", type=int, default=100, metavar="N", help="how many pending orders to create"
    )
    seed.set_defaults(command=_seed)


def _add_service_commands(commands: Commands) -> None:
    for name, text, roles in (
        (
            "serve",
            "run the consumer, the outbox relay and the HTTP API in one process",
            {"consume", "http"},
        ),
        (
            "consume",
            "run the consumer and the outbox relay (scale out by running several)",
            {"consume"},
        ),
        ("api", "run the HTTP API and the web console alone", {"http"}),
    ):
        command_parser(
            commands,
            name,
            text,
            "Runs until SIGTERM or Ctrl-C, then stops gracefully. Configured by the BATCHOPS_* "
            "variables (batchops --help lists them); the HTTP API listens on "
            "BATCHOPS_HTTP_HOST:BATCHOPS_HTTP_PORT.",
        ).set_defaults(command=_serve, roles=roles)

    token = command_group(commands, "token", "HTTP API and console tokens")
    create = command_parser(
        token, "create", "create a token for a user; printed alone on the last line"
    )
    create.add_argument("user_id", type=int, metavar="USER_ID", help="the marketplace user")
    create.set_defaults(command=_token_create)
    revoke = command_parser(token, "revoke", "revoke a token at once")
    revoke.add_argument("token", metavar="TOKEN", help="the token as it was printed")
    revoke.set_defaults(command=_token_revoke)
    secret = command_parser(
        commands,
        "webhook-secret",
        "a user's webhook signing secret, created the first time; printed alone on the last line",
        "Receivers check Batchops-Signature with it (docs/contract.md, Webhooks).",
    )
    secret.add_argument("user_id", type=int, metavar="USER_ID", help="the marketplace user")
    secret.add_argument(
        "--rotate", action="store_true", help="replace it: the next webhooks use the new one"
    )
    secret.set_defaults(command=lazy("consumer.entrypoints.webhook_commands", "webhook_secret"))


def _add_publish_command(commands: Commands) -> None:
    publish = command_parser(
        commands,
        "publish",
        "publish a batch request (JSON) or many (JSON lines, one per line)",
        "A missing batch_id is generated. JSON lines are all validated before any is published.",
    )
    publish.add_argument("file", type=Path, help="the requests; '-' reads stdin")
    publish.add_argument(
        "--format",
        choices=["auto", "json", "jsonl"],
        default="auto",
        help="auto: JSON lines for a .jsonl/.ndjson file or several lines that are not one "
        "JSON document",
    )
    publish.add_argument("--wait", action="store_true", help="wait for the completion events")
    publish.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="how long --wait waits"
    )
    publish.add_argument(
        "--dry-run",
        action="store_true",
        help="rehearse: run every operation and keep nothing (only a dryrun.* completion)",
    )
    publish.set_defaults(command=lazy("consumer.entrypoints.publishing", "publish"))

    cancel = command_parser(
        commands,
        "cancel",
        "stop a batch before its next operation (one nobody has seen yet: when it arrives)",
    )
    cancel.add_argument("batch_id", type=uuid.UUID, metavar="BATCH_ID", help="the batch id")
    cancel.set_defaults(command=lazy("consumer.entrypoints.job_commands", "cancel"))
    retry = command_parser(
        commands,
        "retry",
        "publish a new batch of the operations of a partial, failed or cancelled batch that "
        "did not succeed",
    )
    retry.add_argument("batch_id", type=uuid.UUID, metavar="BATCH_ID", help="the batch id")
    retry.add_argument("--wait", action="store_true", help="wait for its completion")
    retry.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="how long --wait waits"
    )
    retry.set_defaults(command=lazy("consumer.entrypoints.job_commands", "retry"))


def _add_maintenance_commands(commands: Commands) -> None:
    schema = command_parser(
        commands,
        "schema",
        "write the JSON Schemas of every message, or the AsyncAPI or OpenAPI document",
    )
    documents = schema.add_mutually_exclusive_group()
    documents.add_argument(
        "--asyncapi",
        action="store_true",
        help="write the AsyncAPI 3.0 document (asyncapi.json) instead",
    )
    documents.add_argument(
        "--openapi", action="store_true", help="write the HTTP API's document (openapi.json)"
    )
    schema.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="where to write (default: schemas; with --asyncapi or --openapi: contracts/schemas)",
    )
    schema.set_defaults(command=_schema)

    queues = command_group(commands, "queues", "broker queues")
    command_parser(
        queues,
        "migrate",
        "move the queues of an earlier version (work queue, dead letters) to this version's "
        "arguments, keeping their messages",
        "Stop every consumer first (docs/operations.md, Upgrading the queues).",
    ).set_defaults(command=lazy("consumer.entrypoints.operator", "migrate_queues"))

    cleanup = command_parser(
        commands,
        "cleanup",
        "delete finished batches and sent events older than DAYS",
        "A deleted batch's batch_id is forgotten: published again, it runs again.",
    )
    cleanup.add_argument(
        "--older-than", type=float, required=True, metavar="DAYS", help="age in days (required)"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only count what would go")
    cleanup.set_defaults(command=_cleanup)


def _db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    from consumer.adapters.database import upgrade
    from consumer.entrypoints.failures import database_errors

    with database_errors(settings.database_url):
        created = asyncio.run(upgrade(settings.database_url))
    print("database created and migrated" if created else "database migrated")
    return EXIT_OK


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.seed import DatabaseNotEmpty, seed
    from consumer.entrypoints.failures import in_database

    if args.orders < 0:
        raise CommandFailed("seed: --orders must not be negative", EXIT_BAD_INPUT)
    try:
        in_database(settings.database_url, lambda conn: seed(conn, order_count=args.orders))
    except DatabaseNotEmpty as exc:
        raise CommandFailed(f"seed: {exc}") from exc
    print(f"seeded 8 users, 3 professionals, 6 services and {args.orders} orders")
    return EXIT_OK


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.bootstrap import ListenError, bootstrap
    from consumer.entrypoints.event_loop import run_on_chosen_loop
    from consumer.entrypoints.failures import broker_errors, refuse_a_missing_schema

    async def run() -> None:
        service = bootstrap(settings, consume="consume" in args.roles, http="http" in args.roles)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        await service.run()

    # The broker is connected at start-up; the database is reached lazily and retried, but
    # one that says it does not exist (or has no tables) will not appear by waiting.
    refuse_a_missing_schema(settings.database_url)
    try:
        with broker_errors(settings.amqp_url):
            run_on_chosen_loop(settings.event_loop, run)
    except ListenError as exc:
        raise CommandFailed(str(exc)) from exc
    return EXIT_OK


def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.tokens import UnknownUser, create_token
    from consumer.entrypoints.failures import in_database

    try:
        token = in_database(settings.database_url, lambda conn: create_token(conn, args.user_id))
    except UnknownUser as exc:
        raise CommandFailed(f"token create: {exc}", EXIT_BAD_INPUT) from exc
    print(f"token for user {args.user_id} (shown once; only its digest is stored):")
    print(token)
    return EXIT_OK


def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.tokens import revoke_token
    from consumer.entrypoints.failures import in_database

    revoked = in_database(settings.database_url, lambda conn: revoke_token(conn, args.token))
    if not revoked:
        raise CommandFailed("token revoke: no live token matches")
    print("token revoked")
    return EXIT_OK


def _schema(_: Settings, args: argparse.Namespace) -> int:
    from consumer.domain.payloads import data_schemas
    from consumer.entrypoints.http.app import write_openapi
    from contracts.asyncapi import write_asyncapi
    from contracts.schema import write_schemas

    committed = args.output or Path("contracts", "schemas")
    try:
        if args.asyncapi:
            print(write_asyncapi(committed / "asyncapi.json", data_schemas()))
        elif args.openapi:
            print(write_openapi(committed / "openapi.json"))
        else:
            for path in write_schemas(args.output or Path("schemas"), data_schemas()):
                print(path)
    except OSError as exc:
        raise CommandFailed(f"schema: cannot write: {exc}") from exc
    return EXIT_OK


def _cleanup(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.maintenance import cleanup
    from consumer.domain.stats import retention_cutoff
    from consumer.entrypoints.failures import in_database

    if args.older_than < 0:
        raise CommandFailed("cleanup: --older-than must not be negative", EXIT_BAD_INPUT)
    cutoff = retention_cutoff(datetime.now(UTC), args.older_than)
    counts = in_database(
        settings.database_url, lambda conn: cleanup(conn, cutoff, dry_run=args.dry_run)
    )
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {counts.batches} batches and {counts.outbox_rows} sent events "
        f"finished before {cutoff.isoformat()}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
