"""`batchops` console script. Exit codes: 0 ok, 1 failed, 2 bad input, 3 timeout.

The wire contract (messages, events, HTTP API) is docs/contract.md in the batchops repository."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from consumer.config import Settings
from consumer.entrypoints.exits import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CommandFailed,
)
from contracts import BatchStatus, OperationType

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "build_parser", "main"]

Command = Callable[[Settings, argparse.Namespace], int]


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
        print(f"batchops: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from consumer.log_config import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        result: int = args.command(settings, args)
    except CommandFailed as exc:
        print(f"batchops: {exc}", file=sys.stderr)
        return exc.exit_code
    return result


def _lazy(module: str, function: str) -> Command:
    """A command whose module is imported only when it runs, so that `--help` starts fast."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(module), function)
        return command(settings, args)

    return run


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _group(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    group = commands.add_parser(name, help=text, description=text)
    group.set_defaults(group_parser=group)
    return group.add_subparsers(metavar="ACTION")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    db = _group(commands, "db", "database schema")
    db.add_parser("upgrade", help="create the database if missing and migrate it").set_defaults(
        command=_db_upgrade
    )

    seed = commands.add_parser("seed", help="load the demo marketplace into an empty database")
    seed.add_argument("--orders", type=int, default=100, metavar="N")
    seed.set_defaults(command=_seed)

    for name, text, roles in (
        ("serve", "consumer, outbox relay and HTTP API in one process", {"consume", "http"}),
        ("consume", "consumer and outbox relay (scale out by running several)", {"consume"}),
        ("api", "the HTTP API alone", {"http"}),
    ):
        commands.add_parser(name, help=text).set_defaults(command=_serve, roles=roles)

    token = _group(commands, "token", "HTTP API tokens")
    create = token.add_parser("create", help="create a token; printed alone on the last line")
    create.add_argument("user_id", type=int, metavar="USER_ID")
    create.set_defaults(command=_token_create)
    revoke = token.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token", metavar="TOKEN")
    revoke.set_defaults(command=_token_revoke)

    publish = commands.add_parser(
        "publish", help="publish a batch request (JSON) or many (JSON lines, one per line)"
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
    publish.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    publish.set_defaults(command=_lazy("consumer.entrypoints.publishing", "publish"))

    schema = commands.add_parser(
        "schema",
        help="write the JSON Schemas of every message, or the AsyncAPI or OpenAPI document",
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

    queues = _group(commands, "queues", "broker queues")
    queues.add_parser(
        "migrate",
        help="move the queues an earlier version declared (work queue, dead letters) to this "
        "version's arguments, keeping their messages (stop every consumer first; "
        "docs/operations.md)",
    ).set_defaults(command=_lazy("consumer.entrypoints.operator", "migrate_queues"))

    cleanup = commands.add_parser("cleanup", help="delete finished batches older than DAYS")
    cleanup.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    cleanup.add_argument("--dry-run", action="store_true", help="only count what would go")
    cleanup.set_defaults(command=_cleanup)

    _add_operator_commands(commands)
    return parser


def _add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batches = _group(commands, "batches", "stored batches and their results")
    show = batches.add_parser("show", help="one batch with every operation's result")
    show.add_argument("batch_id", type=uuid.UUID, metavar="ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(command=_lazy("consumer.entrypoints.operator", "show_batch"))
    listing = batches.add_parser("list", help="recent batches, newest first")
    listing.add_argument("--limit", type=_positive_int, default=20, metavar="N")
    listing.add_argument("--status", choices=[s.value for s in BatchStatus], metavar="STATUS")
    listing.add_argument(
        "--operation-type", choices=[t.value for t in OperationType], metavar="TYPE"
    )
    listing.add_argument("--actor", type=int, metavar="USER_ID", help="only this actor's")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(command=_lazy("consumer.entrypoints.operator", "list_batches"))

    dead = _group(commands, "dead-letters", "requests in the dead-letter queue {ns}.dead")
    peek = dead.add_parser("list", help="show dead letters without removing them")
    peek.add_argument("--limit", type=_positive_int, default=20, metavar="N")
    peek.add_argument("--json", action="store_true", help="machine-readable output")
    peek.set_defaults(command=_lazy("consumer.entrypoints.operator", "list_dead_letters"))
    replay = dead.add_parser(
        "replay", help="republish dead letters to the requests exchange, then remove them"
    )
    replay.add_argument("--limit", type=_positive_int, metavar="N", help="at most N (default all)")
    replay.add_argument("--batch-id", type=uuid.UUID, metavar="ID", help="only this batch's")
    replay.set_defaults(command=_lazy("consumer.entrypoints.operator", "replay_dead_letters"))


def _db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    from consumer.adapters.database import upgrade
    from consumer.entrypoints.failures import database_errors

    with database_errors(settings.database_url):
        created = asyncio.run(upgrade(settings.database_url))
    print("database created and migrated" if created else "database migrated")
    return EXIT_OK


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.seed import DatabaseNotEmpty, seed
    from consumer.entrypoints.failures import database_errors

    async def run() -> None:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await seed(conn, order_count=args.orders)
        finally:
            await engine.dispose()

    if args.orders < 0:
        raise CommandFailed("seed: --orders must not be negative", EXIT_BAD_INPUT)
    try:
        with database_errors(settings.database_url):
            asyncio.run(run())
    except DatabaseNotEmpty as exc:
        raise CommandFailed(f"seed: {exc}") from exc
    print(f"seeded 8 users, 3 professionals, 6 services and {args.orders} orders")
    return EXIT_OK


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.bootstrap import bootstrap
    from consumer.entrypoints.failures import broker_errors

    async def run() -> None:
        service = bootstrap(settings, consume="consume" in args.roles, http="http" in args.roles)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        await service.run()

    # The broker is connected at start-up; the database is reached lazily and retried.
    with broker_errors(settings.amqp_url):
        asyncio.run(run())
    return EXIT_OK


def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.tokens import UnknownUser, create_token
    from consumer.entrypoints.failures import database_errors

    async def run() -> str:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await create_token(conn, args.user_id)
        finally:
            await engine.dispose()

    try:
        with database_errors(settings.database_url):
            token = asyncio.run(run())
    except UnknownUser as exc:
        raise CommandFailed(f"token create: {exc}", EXIT_BAD_INPUT) from exc
    print(f"token for user {args.user_id} (shown once; only its digest is stored):")
    print(token)
    return EXIT_OK


def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.tokens import revoke_token
    from consumer.entrypoints.failures import database_errors

    async def run() -> bool:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await revoke_token(conn, args.token)
        finally:
            await engine.dispose()

    with database_errors(settings.database_url):
        revoked = asyncio.run(run())
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
    from consumer.adapters.database import create_engine
    from consumer.adapters.maintenance import cleanup
    from consumer.domain.stats import retention_cutoff
    from consumer.entrypoints.failures import database_errors

    if args.older_than < 0:
        raise CommandFailed("cleanup: --older-than must not be negative", EXIT_BAD_INPUT)
    cutoff = retention_cutoff(datetime.now(UTC), args.older_than)

    async def run() -> None:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                counts = await cleanup(conn, cutoff, dry_run=args.dry_run)
        finally:
            await engine.dispose()
        verb = "would delete" if args.dry_run else "deleted"
        print(
            f"{verb} {counts.batches} batches and {counts.outbox_rows} sent events "
            f"finished before {cutoff.isoformat()}"
        )

    with database_errors(settings.database_url):
        asyncio.run(run())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
