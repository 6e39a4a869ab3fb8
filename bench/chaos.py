"""Chaos soak: kill -9 the consumer at random while batches flow, then check the oracle.

    python -m bench.chaos [--batches 500] [--ops 20] [--min-kill 0.5] [--max-kill 5] [--seed N]

Creates (and drops) the database `batchops_chaos` on the server of BATCHOPS_DATABASE_URL and a
fresh broker namespace. Every operation appends a unique token to its own order's notes through
the shipped `append_order_note` custom handler, so an operation applied twice shows up as the
token twice. Prints one JSON line with lost / duplicated / stuck counts (all must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from sqlalchemy import func, make_url, select, text

from consumer.adapters.database import create_engine, upgrade
from consumer.adapters.seed import seed
from consumer.adapters.tables import batch_operations, operation_results, orders, outbox
from consumer.config import Settings
from contracts import BatchRequest, Topology
from publisher import BatchPublisher, declare_topology

DATABASE = "batchops_chaos"
BATCHOPS = str(Path(sys.executable).with_name("batchops"))


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


class Consumer:
    """`batchops consume` that can be killed without warning and started again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log.open("ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [BATCHOPS, "consume"], env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.kills += 1

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None
        finally:
            self._log.close()


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
    base = make_url(Settings().database_url)
    url = base.set(database=DATABASE).render_as_string(hide_password=False)
    admin = create_engine(base.set(database="postgres").render_as_string(hide_password=False))
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    await upgrade(url)
    engine = create_engine(url, pool_size=2)
    async with engine.begin() as conn:
        await seed(conn, order_count=args.batches * args.ops)

    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    settings = Settings()
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
    consumer = Consumer(env, Path(args.log))
    batches = requests(args.batches, args.ops)
    started = time.monotonic()
    try:
        consumer.start()
        async with BatchPublisher(settings.amqp_url, namespace=namespace) as publisher:
            await asyncio.gather(*(publisher.publish(b) for b in batches))
        completion_ids = {str(_completion_id(b.batch_id)) for b in batches}
        deadline = time.monotonic() + args.timeout
        next_kill = time.monotonic() + rng.uniform(args.min_kill, args.max_kill)
        while not completion_ids <= events.keys() and time.monotonic() < deadline:
            if time.monotonic() >= next_kill and time.monotonic() < deadline - 30:
                consumer.kill()
                consumer.start()
                next_kill = time.monotonic() + rng.uniform(args.min_kill, args.max_kill)
            await asyncio.sleep(0.05)  # a soak's own pacing, not a test waiting for state
        exit_code = consumer.stop()
        elapsed = time.monotonic() - started
        return await oracle(
            engine, settings, topology, batches, events, consumer.kills, elapsed, exit_code
        )
    finally:
        consumer.kill()
        await listener.close()
        await _drop_namespace(settings.amqp_url, topology)
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        await admin.dispose()


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


async def _drop_namespace(amqp_url: str, topology: Topology) -> None:
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect_robust(amqp_url)
        try:
            channel = await connection.channel()
            for queue in (topology.requests_queue, topology.dead_letter_queue):
                await channel.queue_delete(queue, if_unused=False, if_empty=False)
            for exchange in (
                topology.requests_exchange,
                topology.results_exchange,
                topology.dead_letter_exchange,
            ):
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()


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
    parser.add_argument("--log", default="/tmp/batchops-chaos.log")  # noqa: S108 - a scratch log
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(json.dumps(report))
    sys.exit(0 if report["lost"] == report["duplicated"] == report["stuck"] == 0 else 1)


if __name__ == "__main__":
    main()
