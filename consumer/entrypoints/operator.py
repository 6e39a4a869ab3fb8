"""Operator commands: `batchops batches show|list` (database), `batchops dead-letters
list|replay` and `batchops queues migrate` (broker). Each returns the exit code; failures raise
CommandFailed."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from consumer.adapters.database import in_transaction
from consumer.adapters.queries import HistoryFilter
from consumer.config import Settings
from consumer.entrypoints import dead_letters
from consumer.entrypoints.batch_views import (
    load_batch,
    load_history,
    render_batch,
    render_history,
)
from consumer.entrypoints.exits import EXIT_OK, CommandFailed, confirm
from consumer.entrypoints.failures import broker_address, broker_errors, database_errors


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


BODY_SHOWN = 300  # characters of a body in the table; --json has all of it


def _reasons(settings: Settings, letters: list[dead_letters.DeadLetter]) -> dict[int, str]:
    """Why each letter is dead; the rejection events are read from the database when it
    answers (without it, RabbitMQ's reason alone)."""

    async def read(conn: Any) -> dict[Any, bytes]:
        return await dead_letters.rejection_events(conn, letters)

    try:
        with database_errors(settings.database_url):
            stored = asyncio.run(in_transaction(settings.database_url, read))
    except CommandFailed:
        stored = {}
    return {letter.position: dead_letters.why(letter, stored) for letter in letters}


def list_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    topology = settings.topology
    with broker_errors(settings.amqp_url):
        total, letters = asyncio.run(dead_letters.peek(settings.amqp_url, topology, args.limit))
    reasons = _reasons(settings, letters)
    if args.json:
        results = [letter.as_json() | {"why": reasons[letter.position]} for letter in letters]
        _print_json({"count": total, "results": results})
        return EXIT_OK
    if not letters:
        print(f"{topology.dead_letter_queue} is empty")
        return EXIT_OK
    for letter in letters:
        print(_describe(letter, reasons[letter.position]))
    print(f"{len(letters)} of {total} dead letters in {topology.dead_letter_queue}, oldest first")
    return EXIT_OK


def _describe(letter: dead_letters.DeadLetter, why: str) -> str:
    replays = f" (replayed {letter.replays}x)" if letter.replays else ""
    body = letter.body_text
    shown = body if len(body) <= BODY_SHOWN else body[:BODY_SHOWN] + f"… ({letter.size} bytes)"
    dead_since = letter.dead_since.isoformat(timespec="seconds") if letter.dead_since else "-"
    return "\n".join(
        [
            f"#{letter.position}  batch {letter.batch_id or '-'}  {letter.operation_type}  "
            f"routing key {letter.routing_key or '-'}  user {letter.user_id or '-'}  "
            f"dead since {dead_since}",
            f"    reason  {letter.reason}{replays}: {why}"
            if why != letter.reason
            else f"    reason  {letter.reason}{replays}",
            f"    body    ({letter.body_encoding}) {shown}",
        ]
    )


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
    dead = settings.topology.dead_letter_queue
    came_back = (
        f" ({report.returned} refused again or new since, not counted)" if report.returned else ""
    )
    print(
        f"replayed {len(report.replayed)} dead letters to {settings.topology.requests_exchange}; "
        f"{report.left} left in {dead}{came_back}"
    )
    return EXIT_OK


def purge_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    dead = settings.topology.dead_letter_queue
    if not args.yes:
        confirm(f"delete every dead letter in {dead} on {broker_address(settings.amqp_url)}?")
    with broker_errors(settings.amqp_url):
        purged = asyncio.run(dead_letters.purge(settings.amqp_url, settings.topology))
    print(f"purged {purged} dead letters from {dead}")
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
