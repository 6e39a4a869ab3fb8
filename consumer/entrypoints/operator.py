"""Operator commands: `batchops batches show|list` (database), `batchops dead-letters
list|replay` and `batchops queues migrate` (broker). Each returns the exit code; failures raise
CommandFailed."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from consumer.adapters.queries import HistoryFilter
from consumer.config import Settings
from consumer.entrypoints import dead_letters
from consumer.entrypoints.batch_views import (
    load_batch,
    load_history,
    render_batch,
    render_history,
    render_table,
)
from consumer.entrypoints.exits import EXIT_OK, CommandFailed
from consumer.entrypoints.failures import broker_errors, database_errors


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def show_batch(settings: Settings, args: argparse.Namespace) -> int:
    with database_errors(settings.database_url):
        found = asyncio.run(load_batch(settings.database_url, args.batch_id))
    if found is None:
        raise CommandFailed(f"no batch {args.batch_id} (never accepted, or cleaned up)")
    view, results = found
    if args.json:
        _print_json(view.as_json() | {"results": [r.model_dump(mode="json") for r in results]})
    else:
        print(render_batch(view, results))
    return EXIT_OK


def list_batches(settings: Settings, args: argparse.Namespace) -> int:
    where = HistoryFilter(
        actor_id=args.actor, status=args.status, operation_type=args.operation_type
    )
    with database_errors(settings.database_url):
        count, views = asyncio.run(load_history(settings.database_url, where, args.limit))
    if args.json:
        _print_json({"count": count, "results": [view.as_json() for view in views]})
    else:
        print(render_history(count, views))
    return EXIT_OK


def list_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    topology = settings.topology
    with broker_errors(settings.amqp_url):
        total, letters = asyncio.run(dead_letters.peek(settings.amqp_url, topology, args.limit))
    if args.json:
        _print_json({"count": total, "results": [letter.as_json() for letter in letters]})
        return EXIT_OK
    if not letters:
        print(f"{topology.dead_letter_queue} is empty")
        return EXIT_OK
    headers = ["#", "BATCH", "TYPE", "REASON", "ROUTING KEY", "USER", "BYTES", "DEAD SINCE"]
    rows = [
        [
            str(letter.position),
            letter.batch_id or "-",
            letter.operation_type,
            letter.reason + (f" (replayed {letter.replays}x)" if letter.replays else ""),
            letter.routing_key or "-",
            letter.user_id or "-",
            str(letter.size),
            letter.dead_since.isoformat(timespec="seconds") if letter.dead_since else "-",
        ]
        for letter in letters
    ]
    print(render_table(headers, rows))
    print(f"{len(letters)} of {total} dead letters in {topology.dead_letter_queue}, oldest first")
    return EXIT_OK


def replay_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    def announce(letter: dead_letters.DeadLetter) -> None:
        batch = letter.batch_id or "-"
        print(f"replayed #{letter.position}: batch {batch} ({letter.operation_type})")

    with broker_errors(settings.amqp_url):
        report = asyncio.run(
            dead_letters.replay(
                settings.amqp_url,
                settings.topology,
                limit=args.limit,
                batch_id=args.batch_id,
                on_replayed=announce,
            )
        )
    if args.batch_id is not None and not report.replayed:
        raise CommandFailed(f"no dead letter of batch {args.batch_id}")
    print(
        f"replayed {len(report.replayed)} dead letters to {settings.topology.requests_exchange}; "
        f"{report.left} left in {settings.topology.dead_letter_queue}"
    )
    return EXIT_OK


def migrate_queues(settings: Settings, _: argparse.Namespace) -> int:
    """`batchops queues migrate`: every queue with this version's arguments, messages kept."""
    from consumer.adapters.queue_migration import (  # noqa: PLC0415 - only this command
        MigrationRefused,
        MigrationReport,
        QueueState,
        migrate,
    )
    from publisher import connect_robust  # noqa: PLC0415 - the broker client, as above

    def describe(report: MigrationReport) -> str:
        if report.was is QueueState.OUTDATED:
            return (
                f"migrated {report.queue}: {report.moved_out} messages moved out, "
                f"{report.moved_in} moved back in with the current arguments"
            )
        state = "is declared with" if report.was is QueueState.ABSENT else "already has"
        extra = f"; {report.moved_in} messages moved in from an earlier run"
        return f"{report.queue} {state} the current arguments{extra if report.moved_in else ''}"

    async def run() -> str:
        connection = await connect_robust(settings.amqp_url)
        try:
            reports = await migrate(connection, settings.topology)
        finally:
            await connection.close()
        return "\n".join(describe(report) for report in reports)

    try:
        with broker_errors(settings.amqp_url):
            print(asyncio.run(run()))
    except MigrationRefused as exc:
        raise CommandFailed(f"queues migrate: {exc}") from exc
    return EXIT_OK
