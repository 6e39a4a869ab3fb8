"""Chaos soak: kill -9 the consumer and restart PostgreSQL at random while batches flow, then
check the oracle.

    python -m bench.chaos [--batches 500] [--ops 20] [--min-kill 0.5] [--max-kill 5]
                          [--restart-every 3] [--seed N]

Runs a PostgreSQL server of its own (initdb into a temporary directory, a free port on
127.0.0.1; as the `postgres` OS user when run as root), never the machine's shared one, and a
fresh broker namespace on BATCHOPS_AMQP_URL. Every `--min-kill`..`--max-kill` seconds a fault
strikes: the consumer is killed with SIGKILL and restarted, and every `--restart-every`-th
fault is instead a PostgreSQL restart, in fast and in immediate mode by turns (0: no
restarts). Every operation appends a unique token to its own order's notes through the
`append_order_note` custom handler, so an operation applied twice shows up as the token twice.
That handler belongs to the example plugin (examples/handlers), not to batchops: the soak
installs the plugin into its own environment first when it is missing there.

Prints one JSON line with lost / duplicated / stuck / wrongly_failed counts (all must be 0:
the exit status is 1 otherwise). Wrongly failed: an operation that ended INTERNAL_ERROR,
UNAVAILABLE or SKIPPED, although every fault healed (each operation here succeeds when run once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import aio_pika
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.environment import delete_namespace, require_local
from bench.service import ServiceProcess
from consumer.adapters.database import create_engine
from consumer.adapters.queries import backlog
from consumer.adapters.tables import batch_operations, operation_results, orders, waiting_requests
from consumer.config import Settings
from consumer.service_layer.registry import ENTRY_POINT_GROUP
from contracts import BatchRequest, ErrorCode, Topology
from publisher import BatchPublisher, declare_topology

# The fault suite's private server: the soak restarts it, so it must be nobody else's.
from tests.faults.pgserver import PostgresServer

# Results that an operation must not end with when every fault healed in time.
FAILURE_CODES = (
    ErrorCode.INTERNAL_ERROR.value,
    ErrorCode.UNAVAILABLE.value,
    ErrorCode.SKIPPED.value,
)
TRACEBACK = "Traceback (most recent call last)"
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "handlers"
HANDLER = "append_order_note"
Fault = Literal["kill", "fast", "immediate"]


def install_example_plugin() -> None:
    """Install examples/handlers (editable) unless its handler is registered already: the
    consumers the soak starts run from this environment and must find it."""
    if metadata.entry_points(group=ENTRY_POINT_GROUP, name=HANDLER):
        return
    print(f"chaos: installing the example plugin ({EXAMPLE_PLUGIN})", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(EXAMPLE_PLUGIN)],
        check=True,
    )
    if not metadata.entry_points(group=ENTRY_POINT_GROUP, name=HANDLER):
        raise SystemExit(f"chaos: {EXAMPLE_PLUGIN} installed, yet no {HANDLER} handler is found")


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
                    "handler": HANDLER,
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


def count_tracebacks(log_dir: Path) -> int:
    return sum(
        log.read_text(encoding="utf-8", errors="replace").count(TRACEBACK)
        for log in log_dir.glob("*.log")
    )


def faults(restart_every: int) -> Iterator[Fault]:
    """The faults in turn: consumer kills, with every `restart_every`-th a PostgreSQL restart
    (fast, then immediate, then fast…)."""
    number = restarts = 0
    while True:
        number += 1
        if restart_every and number % restart_every == 0:
            restarts += 1
            yield "fast" if restarts % 2 else "immediate"
        else:
            yield "kill"


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    settings = Settings()
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    topology = Topology(namespace)
    events: dict[str, list[bytes]] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="batchops-chaos-"))
    batches = requests(args.batches, args.ops)
    async with PostgresServer() as server:
        url = await server.create_service_database(orders=args.batches * args.ops)
        require_local(url, settings.amqp_url)  # the broker: the soak floods a namespace
        env = {
            **os.environ,
            "BATCHOPS_DATABASE_URL": url,
            "BATCHOPS_NAMESPACE": namespace,
            "BATCHOPS_LOG_FORMAT": "json",
            "BATCHOPS_RELAY_POLL_SECONDS": "0.1",
        }
        listener = await collect(settings.amqp_url, topology, events)
        done: Counter[Fault] = Counter()
        consumer = ServiceProcess("consume", env, log_dir / "consume-0.log")
        started = time.monotonic()
        try:
            async with BatchPublisher(settings.amqp_url, namespace=namespace) as publisher:
                await asyncio.gather(*(publisher.publish(b) for b in batches))
            completion_ids = {str(_completion_id(b.batch_id)) for b in batches}
            deadline = time.monotonic() + args.timeout
            schedule = faults(args.restart_every)
            next_fault = time.monotonic() + rng.uniform(args.min_kill, args.max_kill)
            while not completion_ids <= events.keys() and time.monotonic() < deadline:
                if time.monotonic() >= next_fault and time.monotonic() < deadline - 30:
                    fault: Fault = next(schedule)
                    done[fault] += 1
                    if fault == "kill":
                        consumer.kill()
                        consumer = ServiceProcess(
                            "consume", env, log_dir / f"consume-{done['kill']}.log"
                        )
                    else:
                        await server.restart(fault)
                    next_fault = time.monotonic() + rng.uniform(args.min_kill, args.max_kill)
                await asyncio.sleep(0.05)  # a soak's own pacing, not a test waiting for state
            # The last completion can come from a consumer killed before it marked its events
            # sent, or before redelivered copies were taken: the next one finishes that work.
            await settle(url, settings, topology, deadline)
            exit_code = await consumer.stop()
            elapsed = time.monotonic() - started
            report = await oracle(url, settings, topology, batches, events)
        finally:
            consumer.kill()
            await listener.close()
            await delete_namespace(settings.amqp_url, namespace)
    tracebacks = count_tracebacks(log_dir)
    return {
        "batches": len(batches),
        "operations": sum(len(b.operations) for b in batches),
        "kills": done["kill"],
        "restarts_fast": done["fast"],
        "restarts_immediate": done["immediate"],
        "seconds": round(elapsed, 1),
        **report,
        "detail": {
            **report["detail"],
            "last_consumer_exit_code": exit_code,
            "log_tracebacks": tracebacks,
            "logs": str(log_dir),
        },
    }


def _completion_id(batch_id: uuid.UUID) -> uuid.UUID:
    from contracts import completion_event_id  # noqa: PLC0415 - keeps the imports short

    return completion_event_id(batch_id)


async def oracle(
    url: str,
    settings: Settings,
    topology: Topology,
    batches: list[BatchRequest],
    events: dict[str, list[bytes]],
) -> dict[str, Any]:
    from contracts import operation_event_id  # noqa: PLC0415

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            notes = dict((await conn.execute(select(orders.c.id, orders.c.notes))).all())
            statuses = dict(
                (
                    await conn.execute(
                        select(batch_operations.c.batch_id, batch_operations.c.status)
                    )
                ).all()
            )
            results = {
                (batch_id, index): (outcome, code)
                for batch_id, index, outcome, code in (
                    await conn.execute(
                        select(
                            operation_results.c.batch_id,
                            operation_results.c.index,
                            operation_results.c.outcome,
                            operation_results.c.error_code,
                        )
                    )
                ).all()
            }
            unsent, _ = await backlog(conn)  # the outbox's and operation events' both
            parked = await waiting_room_rows(conn)
    finally:
        await engine.dispose()
    lost_effects = duplicated_effects = failed_with_effect = wrongly_failed = 0
    for request in batches:
        for index, op in enumerate(request.operations):
            count = notes.get(op.resource_id, "").split("\n").count(op.data["text"])
            outcome, code = results.get((request.batch_id, index), (None, None))
            # Every operation succeeds when run once: any other result is a fault's doing.
            wrongly_failed += code in FAILURE_CODES
            lost_effects += count == 0 and outcome in ("succeeded", None)
            failed_with_effect += count > 0 and outcome not in ("succeeded", None)
            duplicated_effects += count > 1
    stuck = sum(statuses.get(b.batch_id) not in ("completed", "partial", "failed") for b in batches)
    expected_events = [str(_completion_id(b.batch_id)) for b in batches] + [
        str(operation_event_id(b.batch_id, i)) for b in batches for i in range(len(b.operations))
    ]
    lost_events = sum(event_id not in events for event_id in expected_events)
    differing_copies = sum(len(set(bodies)) > 1 for bodies in events.values())
    waiting = await requests_waiting(settings, topology)
    return {
        "lost": lost_effects + lost_events,
        "duplicated": duplicated_effects + differing_copies + failed_with_effect,
        "stuck": stuck + (waiting or 0) + (unsent or 0) + parked,
        "wrongly_failed": wrongly_failed,
        "detail": {
            "lost_effects": lost_effects,
            "lost_events": lost_events,
            "duplicated_effects": duplicated_effects,
            "failed_with_effect": failed_with_effect,
            "event_copies_differing": differing_copies,
            "non_terminal_batches": stuck,
            "requests_waiting": waiting,
            "unsent_outbox": unsent,
            "waiting_room_rows": parked,
            "result_rows": len(results),
            "events_with_redelivered_copies": sum(len(v) > 1 for v in events.values()),
        },
    }


async def waiting_room_rows(conn: AsyncConnection) -> int:
    """Requests still in the fair-share waiting room, leased or not (the soak's database is
    its own: every row is the soak's)."""
    return int(await conn.scalar(select(func.count()).select_from(waiting_requests)) or 0)


async def requests_waiting(settings: Settings, topology: Topology) -> int:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        return await _ready(await connection.channel(), topology)
    finally:
        await connection.close()


async def _ready(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> int:
    queue = await channel.declare_queue(topology.requests_queue, passive=True)
    return queue.declaration_result.message_count or 0


async def settle(url: str, settings: Settings, topology: Topology, deadline: float) -> None:
    """Return once no request waits (in the queue or the waiting room) and every event is
    marked sent, or at `deadline` (the oracle then counts what is left as stuck)."""
    engine = create_engine(url, pool_size=1)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        while time.monotonic() < deadline:
            try:
                async with engine.connect() as conn:
                    unsent, _ = await backlog(conn)
                    parked = await waiting_room_rows(conn)
                if not unsent and not parked and await _ready(channel, topology) == 0:
                    return
            except (OSError, DBAPIError):  # PostgreSQL still restarting after the last fault
                pass
            await asyncio.sleep(0.2)  # polling the state with a deadline, not a bare wait
    finally:
        await connection.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--ops", type=int, default=20)
    parser.add_argument("--min-kill", type=float, default=0.5)
    parser.add_argument("--max-kill", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--restart-every",
        type=int,
        default=3,
        metavar="N",
        help="every N-th fault restarts PostgreSQL instead of killing the consumer (0: never)",
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    install_example_plugin()
    report = asyncio.run(soak(args))
    print(json.dumps(report))
    counts = ("lost", "duplicated", "stuck", "wrongly_failed")
    sys.exit(0 if all(report[name] == 0 for name in counts) else 1)


if __name__ == "__main__":
    main()
