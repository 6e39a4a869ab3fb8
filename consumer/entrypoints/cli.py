"""`batchops` console script (DESIGN §8). Exit codes: 0 ok, 1 failed, 2 bad input, 3 timeout."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from consumer.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"batchops: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from consumer.log_config import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    result: int = args.command(settings, args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchops", description=__doc__)
    commands = parser.add_subparsers(metavar="COMMAND")

    db = commands.add_parser("db", help="database schema").add_subparsers(metavar="ACTION")
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

    token = commands.add_parser("token", help="HTTP API tokens").add_subparsers(metavar="ACTION")
    create = token.add_parser("create", help="create a token; printed alone on the last line")
    create.add_argument("user_id", type=int, metavar="USER_ID")
    create.set_defaults(command=_token_create)
    revoke = token.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token", metavar="TOKEN")
    revoke.set_defaults(command=_token_revoke)

    publish = commands.add_parser("publish", help="publish a batch request from a JSON file")
    publish.add_argument("file", type=Path, help="JSON batch request; '-' reads stdin")
    publish.add_argument("--wait", action="store_true", help="wait for the completion event")
    publish.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    publish.set_defaults(command=_publish)

    schema = commands.add_parser("schema", help="write the JSON Schemas of every message")
    schema.add_argument("--output", type=Path, default=Path("schemas"), metavar="DIR")
    schema.set_defaults(command=_schema)

    cleanup = commands.add_parser("cleanup", help="delete finished batches older than DAYS")
    cleanup.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    cleanup.add_argument("--dry-run", action="store_true", help="only count what would go")
    cleanup.set_defaults(command=_cleanup)
    return parser


def _db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    from consumer.adapters.database import upgrade

    created = asyncio.run(upgrade(settings.database_url))
    print("database created and migrated" if created else "database migrated")
    return EXIT_OK


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.seed import DatabaseNotEmpty, seed

    async def run() -> None:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await seed(conn, order_count=args.orders)
        finally:
            await engine.dispose()

    if args.orders < 0:
        print("batchops seed: --orders must not be negative", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        asyncio.run(run())
    except DatabaseNotEmpty as exc:
        print(f"batchops seed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"seeded 8 users, 3 professionals, 6 services and {args.orders} orders")
    return EXIT_OK


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.bootstrap import bootstrap

    async def run() -> None:
        service = bootstrap(settings, consume="consume" in args.roles, http="http" in args.roles)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        await service.run()

    asyncio.run(run())
    return EXIT_OK


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.entrypoints.summary import render_completion
    from contracts import BatchRejected, BatchRequest
    from publisher import BatchPublisher, CompletionTimeout, PublishError

    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"batchops publish: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(raw, dict):
        raw.setdefault("batch_id", str(uuid.uuid4()))
    try:
        request = BatchRequest.model_validate_json(json.dumps(raw))
    except ValidationError as exc:
        print(f"batchops publish: {args.file} is not a valid batch request:", file=sys.stderr)
        for err in exc.errors(include_url=False):
            where = ".".join(str(part) for part in err["loc"]) or "body"
            print(f"  - {where}: {err['msg']}", file=sys.stderr)
        return EXIT_BAD_INPUT

    async def run() -> int:
        async with BatchPublisher(
            settings.amqp_url, namespace=settings.namespace, delivery_limit=settings.delivery_limit
        ) as publisher:
            if not args.wait:
                await publisher.publish(request)
                print(f"published batch {request.batch_id} ({len(request.operations)} operations)")
                return EXIT_OK
            print(f"published batch {request.batch_id}; waiting for its completion...")
            event = await publisher.publish_and_wait(request, timeout=args.timeout)
            print(render_completion(event))
            return EXIT_FAILED if isinstance(event, BatchRejected) else EXIT_OK

    try:
        return asyncio.run(run())
    except CompletionTimeout as exc:
        print(f"batchops publish: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except (PublishError, ConnectionError, OSError) as exc:
        print(f"batchops publish: could not publish: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.tokens import UnknownUser, create_token

    async def run() -> str:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await create_token(conn, args.user_id)
        finally:
            await engine.dispose()

    try:
        token = asyncio.run(run())
    except UnknownUser as exc:
        print(f"batchops token create: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"token for user {args.user_id} (shown once; only its digest is stored):")
    print(token)
    return EXIT_OK


def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.tokens import revoke_token

    async def run() -> bool:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await revoke_token(conn, args.token)
        finally:
            await engine.dispose()

    if not asyncio.run(run()):
        print("batchops token revoke: no live token matches", file=sys.stderr)
        return EXIT_FAILED
    print("token revoked")
    return EXIT_OK


def _schema(_: Settings, args: argparse.Namespace) -> int:
    from contracts.schema import write_schemas

    for path in write_schemas(args.output):
        print(path)
    return EXIT_OK


def _cleanup(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.adapters.database import create_engine
    from consumer.adapters.maintenance import cleanup
    from consumer.domain.stats import retention_cutoff

    if args.older_than < 0:
        print("batchops cleanup: --older-than must not be negative", file=sys.stderr)
        return EXIT_BAD_INPUT
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

    asyncio.run(run())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
