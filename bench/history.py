"""History look-ups with a million stored batches: p50/p99 of `GET /api/v1/batch/history/`'s query.

    python -m bench.history [--batches 1000000] [--actors 1000] [--samples 200]

Creates (and afterwards drops) the database `batchops_bench_history` on the server of
BATCHOPS_DATABASE_URL, fills it with `--batches` terminal batches spread over `--actors` users
and 30 days, then times the same query code the API runs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import make_url, text

from consumer.adapters.database import create_engine, upgrade
from consumer.adapters.queries import HistoryFilter, history
from consumer.config import Settings

DATABASE = "batchops_bench_history"

FILL = """
INSERT INTO batch_operations (
    batch_id, operation_type, actor_id, mode, status, total_operations, completed_operations,
    failed_operations, skipped_operations, fingerprint, created_at, started_at, completed_at)
SELECT md5(i::text)::uuid,
       (ARRAY['order_update','professional_approval','service_update','user_update',
              'bulk_delete'])[1 + i % 5],
       1 + i % :actors, 'continue',
       (ARRAY['completed','completed','completed','partial','failed'])[1 + (i / 7) % 5],
       50, 50, 0, 0, decode(md5(i::text), 'hex'),
       now() - (i * interval '2.592 second'), now() - (i * interval '2.592 second'),
       now() - (i * interval '2.592 second') + interval '1 second'
FROM generate_series(1, :batches) AS i
"""


async def timed(call: Callable[[], Awaitable[object]], samples: int) -> dict[str, float]:
    durations = []
    for _ in range(samples):
        start = time.perf_counter()
        await call()
        durations.append((time.perf_counter() - start) * 1000)
    durations.sort()
    return {
        "p50_ms": round(statistics.median(durations), 2),
        "p99_ms": round(durations[min(len(durations) - 1, int(len(durations) * 0.99))], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    url = make_url(Settings().database_url).set(database=DATABASE)
    rendered = url.render_as_string(hide_password=False)
    admin = create_engine(url.set(database="postgres").render_as_string(hide_password=False))
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    await upgrade(rendered)
    engine = create_engine(rendered, pool_size=1)
    try:
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text(FILL), {"actors": args.actors, "batches": args.batches})
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE batch_operations"))
        fill_seconds = round(time.perf_counter() - started, 1)

        async def page(where: HistoryFilter, offset: int = 0) -> Callable[[], Awaitable[object]]:
            async def run() -> object:
                async with engine.connect() as conn:
                    return await history(conn, where, limit=20, offset=offset)

            return run

        cases = {
            "user_first_page": await page(HistoryFilter(actor_id=42)),
            "user_status_filter": await page(HistoryFilter(actor_id=42, status="failed")),
            "user_type_filter": await page(
                HistoryFilter(actor_id=42, operation_type="user_update")
            ),
            "user_offset_900": await page(HistoryFilter(actor_id=42), offset=900),
            "admin_first_page": await page(HistoryFilter(actor_id=None)),
            "admin_status_filter": await page(HistoryFilter(actor_id=None, status="failed")),
        }
        figures = {name: await timed(call, args.samples) for name, call in cases.items()}
        print(
            json.dumps(
                {
                    "batches": args.batches,
                    "actors": args.actors,
                    "fill_seconds": fill_seconds,
                    "samples": args.samples,
                    **figures,
                }
            )
        )
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
