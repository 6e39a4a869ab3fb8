"""`batchops status` (what the service is doing, from the broker and the database) and
`batchops teardown` (remove a namespace and its database)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.broker_stats import QueueStats, queue_stats, watched_queues
from consumer.adapters.console_queries import Overview, overview
from consumer.adapters.database import drop_database, in_transaction
from consumer.adapters.queries import delete_waiting_requests
from consumer.config import Settings
from consumer.entrypoints.exits import EXIT_FAILED, EXIT_OK, CommandFailed, confirm
from consumer.entrypoints.failures import (
    broker_address,
    broker_errors,
    database_address,
    database_errors,
)
from contracts import Topology
from publisher import connect


async def _queues(amqp_url: str, topology: Topology) -> list[QueueStats]:
    connection = await connect(amqp_url)
    async with connection:
        return await queue_stats(connection, watched_queues(topology))


def _read_queues(settings: Settings) -> list[QueueStats]:
    with broker_errors(settings.amqp_url):
        return asyncio.run(_queues(settings.amqp_url, settings.topology))


def _read_overview(settings: Settings) -> Overview:
    async def read(conn: AsyncConnection) -> Overview:
        return await overview(conn, namespace=settings.namespace)

    with database_errors(settings.database_url):
        return asyncio.run(in_transaction(settings.database_url, read))


def _queue_lines(queues: list[QueueStats]) -> list[str]:
    width = max(len(q.name) for q in queues)
    return [
        f"  {q.name:<{width}}  {q.messages:>6} ready  {q.consumers:>3} consumers"
        if q.exists
        else f"  {q.name:<{width}}  not declared (nothing ran in this namespace yet)"
        for q in queues
    ]


def _overview_lines(figures: Overview) -> list[str]:
    oldest = f"{figures.oldest_unsent_seconds:.1f}s" if figures.unsent_events else "-"
    last = figures.last_batch
    return [
        f"batches: {figures.in_flight} in flight, {figures.waiting} submitted and not yet taken; "
        f"last hour {figures.finished_last_hour} finished, "
        f"{figures.failure_rate:.2f}% failed or partial",
        f"waiting for a slot under fair share: {figures.parked} requests",
        f"outbox: {figures.unsent_events} events not yet published, oldest unsent {oldest}",
        (
            f"last batch: {last['batch_id']} {last['operation_type']} {last['status']} "
            f"created {last['created_at'].isoformat(timespec='seconds')}"
            if last
            else "last batch: none yet"
        ),
    ]


def _as_json(queues: list[QueueStats] | None, figures: Overview | None) -> dict[str, Any]:
    document: dict[str, Any] = {"queues": None, "database": None}
    if queues is not None:
        document["queues"] = [
            {"name": q.name, "exists": q.exists, "messages": q.messages, "consumers": q.consumers}
            for q in queues
        ]
    if figures is not None:
        last = figures.last_batch
        document["database"] = {
            "in_flight": figures.in_flight,
            "waiting": figures.waiting,
            "fair_share_waiting": figures.parked,
            "finished_last_hour": figures.finished_last_hour,
            "failure_rate_last_hour": figures.failure_rate,
            "outbox_backlog": figures.unsent_events,
            "oldest_unsent_seconds": figures.oldest_unsent_seconds,
            "last_batch": {key: str(value) for key, value in last.items()} if last else None,
        }
    return document


def status(settings: Settings, args: argparse.Namespace) -> int:
    """Both sides are read even when one fails; each failure is one line on stderr."""
    failures: list[str] = []
    queues: list[QueueStats] | None = None
    figures: Overview | None = None
    try:
        queues = _read_queues(settings)
    except CommandFailed as exc:
        failures.append(str(exc))
    try:
        figures = _read_overview(settings)
    except CommandFailed as exc:
        failures.append(str(exc))
    if args.json:
        print(json.dumps(_as_json(queues, figures), indent=2))
    else:
        _print_text(settings, queues, figures)
    for failure in failures:
        print(f"batchops: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _print_text(
    settings: Settings, queues: list[QueueStats] | None, figures: Overview | None
) -> None:
    topology = settings.topology
    if queues is not None:
        print(f"queues of namespace {topology.namespace} at {broker_address(settings.amqp_url)}:")
        print("\n".join(_queue_lines(queues)))
        dead = next(q for q in queues if q.name == topology.dead_letter_queue)
        print(f"dead letters: {dead.messages} (batchops dead-letters list)")
    if figures is not None:
        print(f"database at {database_address(settings.database_url)}:")
        print("\n".join(_overview_lines(figures)))


async def _delete_topology(amqp_url: str, topology: Topology) -> None:
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in [*watched_queues(topology), f"{topology.requests_queue}.migrating"]:
            await channel.queue_delete(queue)
        for exchange in (
            topology.requests_exchange,
            topology.results_exchange,
            topology.dead_letter_exchange,
        ):
            await channel.exchange_delete(exchange)


def teardown(settings: Settings, args: argparse.Namespace) -> int:
    topology = settings.topology
    what = f"the queues and exchanges of namespace {topology.namespace!r}"
    if not args.keep_database:
        what += f" and the database at {database_address(settings.database_url)}"
    if not args.yes:
        confirm(f"Delete {what}, with every message and batch in them?")
    with broker_errors(settings.amqp_url):
        asyncio.run(_delete_topology(settings.amqp_url, topology))
    print(f"deleted the queues and exchanges of namespace {topology.namespace}")
    with database_errors(settings.database_url):
        if args.keep_database:
            removed = asyncio.run(
                in_transaction(
                    settings.database_url,
                    lambda conn: delete_waiting_requests(conn, topology.namespace),
                )
            )
            print(f"deleted the namespace's {removed} requests waiting in the database")
        else:
            dropped = asyncio.run(drop_database(settings.database_url))
            print("dropped the database" if dropped else "there was no database to drop")
    return EXIT_OK
