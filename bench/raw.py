"""The raw baseline: asyncpg alone doing the statements of one successful `order_update`.

Per operation, on one connection: BEGIN; SELECT the order joined to its professional FOR UPDATE;
UPDATE its status and notes; INSERT its result row; COMMIT. That is the least any
one-transaction-per-operation design must do, so batchops is measured against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bench.environment import OrderIds

# The same statements the service's repositories issue for an order_update (see
# consumer/adapters/marketplace.py: get_order_for_update, save_order; batches.py: add_result).
SELECT_ORDER = """
SELECT orders.id, orders.client_id, orders.professional_id, orders.service_id, orders.status,
       orders.notes, orders.price, professionals.user_id AS professional_user_id
FROM orders JOIN professionals ON professionals.id = orders.professional_id
WHERE orders.id = $1 AND orders.deleted_at IS NULL
FOR UPDATE OF orders
"""
UPDATE_ORDER = """
UPDATE orders SET status = $2, notes = $3, price = $4, updated_at = now() WHERE orders.id = $1
"""
INSERT_RESULT = """
INSERT INTO operation_results (batch_id, index, resource_id, outcome, status_code, error_code,
                               event)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
INSERT_BATCH = """
INSERT INTO batch_operations (batch_id, operation_type, actor_id, mode, status, total_operations,
                              fingerprint, created_at, started_at)
VALUES ($1, 'order_update', 1, 'continue', 'processing', $2, $3, now(), now())
"""


@dataclass(frozen=True, slots=True)
class Work:
    """One raw operation: the order it changes and the result row it writes."""

    order_id: int
    batch_id: uuid.UUID
    index: int


@dataclass(frozen=True, slots=True)
class RawFigures:
    ops_per_s_1: float
    ops_per_s_n: float
    sequential_ms: float  # median time of `chunk` operations back to back on one connection
    # The client's own CPU per operation (this process runs nothing else meanwhile): what
    # driving the database costs at the least, to set against the service's CPU per operation.
    client_cpu_ms_per_op: float


async def _operation(conn: asyncpg.Connection, work: Work) -> None:
    async with conn.transaction():
        order = await conn.fetchrow(SELECT_ORDER, work.order_id)
        if order is None:
            raise LookupError(f"order {work.order_id} is not seeded")
        notes = f"raw baseline {work.batch_id}/{work.index}"
        await conn.execute(UPDATE_ORDER, work.order_id, "accepted", notes, order["price"])
        # An event body of the service's size, so that the row and its WAL weigh the same.
        event = json.dumps(
            {
                "event_id": str(uuid.uuid5(work.batch_id, str(work.index))),
                "event_type": "batchops.operation.v1",
                "batch_id": str(work.batch_id),
                "correlation_id": None,
                "operation_type": "order_update",
                "index": work.index,
                "resource_id": work.order_id,
                "status": 200,
                "success": True,
                "outcome": "succeeded",
                "data": {
                    **{k: order[k] for k in ("id", "client_id", "professional_id", "service_id")},
                    "status": "accepted",
                    "notes": notes,
                    "price": f"{order['price']:.2f}",
                },
                "occurred_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        await conn.execute(
            INSERT_RESULT, work.batch_id, work.index, work.order_id, "succeeded", 200, None, event
        )


async def _plan(conn: asyncpg.Connection, order_ids: list[int], chunk: int) -> list[Work]:
    """Result rows need a batch row (foreign key): create them now, outside any timing."""
    batches = [uuid.uuid4() for _ in range(0, len(order_ids), chunk)]
    await conn.executemany(
        INSERT_BATCH,
        [(b, chunk, hashlib.sha256(b.bytes).digest()) for b in batches],
    )
    return [Work(order_id, batches[i // chunk], i % chunk) for i, order_id in enumerate(order_ids)]


async def _run_sequence(conn: asyncpg.Connection, works: list[Work], chunk: int) -> list[float]:
    """Run `works` in order; returns the duration (ms) of every full `chunk` of them."""
    durations = []
    for start in range(0, len(works), chunk):
        began = time.perf_counter()
        for work in works[start : start + chunk]:
            await _operation(conn, work)
        if len(works) - start >= chunk:
            durations.append((time.perf_counter() - began) * 1000)
    return durations


async def run_raw(
    dsn: str,
    orders: OrderIds,
    *,
    operations: int,
    connections: int,
    chunk: int,
    before_phase: Callable[[], Awaitable[None]],
) -> RawFigures:
    """Raw ops/s at 1 and at `connections` connections, each over `operations` distinct orders
    (plus one untimed warm-up `chunk` per connection: prepared statements, caches).
    `before_phase` runs before each timed phase."""
    # command_timeout bounds every statement: a stuck lock wait fails the run, never hangs it.
    pool = [await asyncpg.connect(dsn, timeout=10, command_timeout=60) for _ in range(connections)]
    try:
        warm_up = [await _plan(c, orders.take(chunk), chunk) for c in pool]
        single = await _plan(pool[0], orders.take(operations), chunk)
        per_connection = math.ceil(operations / connections)
        parallel_ids = orders.take(per_connection * connections)
        parallel = [
            await _plan(c, parallel_ids[i * per_connection : (i + 1) * per_connection], chunk)
            for i, c in enumerate(pool)
        ]
        await asyncio.gather(
            *(_run_sequence(c, w, chunk) for c, w in zip(pool, warm_up, strict=True))
        )

        await before_phase()
        began = time.perf_counter()
        chunk_ms = await _run_sequence(pool[0], single, chunk)
        ops_per_s_1 = len(single) / (time.perf_counter() - began)

        await before_phase()
        began, cpu_began = time.perf_counter(), time.process_time()
        await asyncio.gather(
            *(_run_sequence(c, w, chunk) for c, w in zip(pool, parallel, strict=True))
        )
        ops_per_s_n = per_connection * connections / (time.perf_counter() - began)
        cpu_ms = (time.process_time() - cpu_began) * 1000 / (per_connection * connections)
    finally:
        for conn in pool:
            await conn.close(timeout=10)
    return RawFigures(
        ops_per_s_1=round(ops_per_s_1, 1),
        ops_per_s_n=round(ops_per_s_n, 1),
        sequential_ms=round(statistics.median(chunk_ms), 1),
        client_cpu_ms_per_op=round(cpu_ms, 3),
    )


async def run_raw_untimed(dsn: str, orders: OrderIds, *, operations: int, chunk: int) -> None:
    """`operations` raw operations on one connection, in batches of `chunk` (a batch row each,
    as batchops has): what they make the database do is counted, not how long they take."""
    conn = await asyncpg.connect(dsn, timeout=10, command_timeout=60)
    try:
        await _run_sequence(conn, await _plan(conn, orders.take(operations), chunk), chunk)
    finally:
        await conn.close(timeout=10)
