"""Chaos soak: kill -9 the consumer at random while batches flow, then check the oracle.

    python -m bench.chaos [--batches 500] [--ops 20] [--min-kill 0.5] [--max-kill 5] [--seed N]

Creates (and drops) the database `batchops_bench_chaos` on the server of BATCHOPS_DATABASE_URL and a
fresh broker namespace. Every operation appends a unique token to its own order's notes through
the shipped `append_order_note` custom handler, so an operation applied twice shows up as the
token twice. Prints one JSON line with lost / duplicated / stuck counts (all must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from sqlalchemy import func, select

from bench.environment import (
    bench_url,
    create_database,
    delete_namespace,
    drop_database,
    render,
    require_local,
)
from bench.service import ServiceProcess
from consumer.adapters.database import create_engine
from consumer.adapters.tables import batch_operations, operation_results, orders, outbox
from consumer.config import Settings
from contracts import BatchRequest, Topology
from publisher import BatchPublisher, declare_topology

DATABASE = "batchops_bench_chaos"


def requests(batches: int, ops: int) -> list[BatchRequest]:
    made = []
    for b in range(batches):
        operations = [
            {"method": "POST", "resource_id": 1 + b * ops + i, "data": {"text": f"t{b}-{i}"}}
            for i in range(ops)
        ]
        made.append(
            BatchRequest.model_validate(
                {
                    "batch_id": str(uuid.uuid4()),
                    "operation_type": "custom",
                    "handler": "append_order_note",
                    "actor_id": 1,
                    "operations": operations,
                }
            )
        )
    return made


async def collect(amqp_url: str, topology: Topology, sink: dict[str, list[bytes]]) -> Any:
    """Bind a queue to every event before anything is published; returns the connection."""
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel()
    await declare_topology(channel, topology)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.results_exchange, "#")

    async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            sink.setdefault(str(message.message_id), []).append(message.body)

    await queue.consume(on_event)
    return connection


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    settings = Settings()
    require_local(settings.database_url, settings.amqp_url)
    database = bench_url(settings.database_url, DATABASE)
    await create_database(database, order_count=args.batches * args.ops)
    url = render(database)
    engine = create_engine(url, pool_size=2)

    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    topology = Topology(namespace)
    env = {
        **os.environ,
        "BATCHOPS_DATABASE_URL": url,
        "BATCHOPS_NAMESPACE": namespace,
        "BATCHOPS_LOG_FORMAT": "json",
        "BATCHOPS_RELAY_POLL_SECONDS": "0.1",
    }
    events: dict[str, list[bytes]] = {}
    listener = await collect(settings.amqp_url, topology, events)
    log_dir = Path(tempfile.mkdtemp(prefix="batchops-chaos-"))
    batches = requests(args.batches, args.ops)
    kills = 0
    consumer = ServiceProcess("consume", env, log_dir / "consume-0.log")
    started = time.monotonic()
    try:
        async with BatchPublisher(settings.amqp_url, namespace=namespace) as publisher:
            await asyncio.gather(*(publisher.publish(b) for b in batches))
        completion_ids = {str(_completion_id(b.batch_id)) for b in batches}
        deadline = time.monotonic() + args.timeout
        next_kill = time.monotonic() + rng.uniform(args.min_kill, args.max_kill)
        while not completion_ids <= events.keys() and time.monotonic() < deadline:
            if time.monotonic() >= next_kill and time.monotonic() < deadline - 30:
                consumer.kill()
                kills += 1
                consumer = ServiceProcess("consume", env, log_dir / f"consume-{kills}.log")
                next_kill = time.monotonic() + rng.uniform(args.min_kill, args.max_kill)
            await asyncio.sleep(0.05)  # a soak's own pacing, not a test waiting for state
        exit_code = await consumer.stop()
        elapsed = time.monotonic() - started
        return await oracle(engine, settings, topology, batches, events, kills, elapsed, exit_code)
    finally:
        consumer.kill()
        await listener.close()
        await delete_namespace(settings.amqp_url, namespace)
        await engine.dispose()
        await drop_database(database)


def _completion_id(batch_id: uuid.UUID) -> uuid.UUID:
    from contracts import completion_event_id  # noqa: PLC0415 - keeps the imports short

    return completion_event_id(batch_id)


async def oracle(
    engine: Any,
    settings: Settings,
    topology: Topology,
    batches: list[BatchRequest],
    events: dict[str, list[bytes]],
    kills: int,
    elapsed: float,
    exit_code: int | None,
) -> dict[str, Any]:
    from contracts import operation_event_id  # noqa: PLC0415

    async with engine.connect() as conn:
        notes = dict((await conn.execute(select(orders.c.id, orders.c.notes))).all())
        statuses = dict(
            (
                await conn.execute(select(batch_operations.c.batch_id, batch_operations.c.status))
            ).all()
        )
        results = await conn.scalar(select(func.count()).select_from(operation_results))
        unsent = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        )
    lost_effects = duplicated_effects = 0
    for request in batches:
        for op in request.operations:
            count = notes.get(op.resource_id, "").split("\n").count(op.data["text"])
            lost_effects += count == 0
            duplicated_effects += count > 1
    stuck = sum(statuses.get(b.batch_id) not in ("completed", "partial", "failed") for b in batches)
    expected_events = [str(_completion_id(b.batch_id)) for b in batches] + [
        str(operation_event_id(b.batch_id, i)) for b in batches for i in range(len(b.operations))
    ]
    lost_events = sum(event_id not in events for event_id in expected_events)
    differing_copies = sum(len(set(bodies)) > 1 for bodies in events.values())
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.requests_queue, passive=True)
        waiting = queue.declaration_result.message_count
    finally:
        await connection.close()
    return {
        "batches": len(batches),
        "operations": sum(len(b.operations) for b in batches),
        "kills": kills,
        "seconds": round(elapsed, 1),
        "lost": lost_effects + lost_events,
        "duplicated": duplicated_effects + differing_copies,
        "stuck": stuck + (waiting or 0) + (unsent or 0),
        "detail": {
            "lost_effects": lost_effects,
            "lost_events": lost_events,
            "duplicated_effects": duplicated_effects,
            "event_copies_differing": differing_copies,
            "non_terminal_batches": stuck,
            "requests_waiting": waiting,
            "unsent_outbox": unsent,
            "result_rows": results,
            "events_with_redelivered_copies": sum(len(v) > 1 for v in events.values()),
            "last_consumer_exit_code": exit_code,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--ops", type=int, default=20)
    parser.add_argument("--min-kill", type=float, default=0.5)
    parser.add_argument("--max-kill", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(json.dumps(report))
    sys.exit(0 if report["lost"] == report["duplicated"] == report["stuck"] == 0 else 1)


if __name__ == "__main__":
    main()
