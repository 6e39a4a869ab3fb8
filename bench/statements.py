"""Count the SQL statements batchops sends per operation, from PostgreSQL's own log.

    python -m bench.statements [--batches 40] [--ops-per-batch 50]
                               [--server-log /var/log/postgresql/postgresql-15-main.log]

Creates the database `batchops_bench_statements` with `log_statement = 'all'` (a setting of
that database only), runs one `batchops consume` and publishes `--batches` order_update batches
at once (1 = one batch alone, where the relay makes a pass per commit), then reads the lines
the server logged for that database and prints each statement with its count per operation.
Needs the server's log file to be readable (a local server, stderr logging). An empty query
(`;`, what a pool pre-ping sends between BEGIN and ROLLBACK) is not logged: count it from the
ROLLBACKs. Everything created is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from bench.e2e import Driver, drive, order_batch
from bench.environment import (
    OrderIds,
    bench_url,
    create_database,
    delete_namespace,
    drop_database,
    execute_admin,
    new_namespace,
    render,
    require_local,
)
from bench.options import Options, service_env
from bench.service import ServiceProcess, start_services
from consumer.config import Settings

DATABASE = "batchops_bench_statements"
_LOGGED = re.compile(r"LOG:  (?:statement|execute [^:]*): (?P<sql>.*)")


def tally(log_text: str, database: str) -> Counter[str]:
    """Statements logged for `database`, keyed by their first 90 characters."""
    counts: Counter[str] = Counter()
    for line in log_text.splitlines():
        if f"@{database} " not in line:  # Debian's log_line_prefix: `… user@database `
            continue
        match = _LOGGED.search(line)
        if match is not None:
            counts[re.sub(r"\s+", " ", match["sql"]).strip()[:90]] += 1
    return counts


def _size(path: Path) -> int:
    return path.stat().st_size


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", errors="replace")


async def count(batches: int, ops_per_batch: int, server_log: Path) -> Counter[str]:
    settings = Settings()
    require_local(settings.database_url, settings.amqp_url)
    url = bench_url(settings.database_url, DATABASE)
    namespace = new_namespace()
    log_dir = Path(tempfile.mkdtemp(prefix="batchops-bench-"))
    services: list[ServiceProcess] = []
    try:
        await create_database(url, batches * ops_per_batch + 10)
        await execute_admin(url, f"ALTER DATABASE \"{DATABASE}\" SET log_statement = 'all'")
        env = service_env(
            Options(batches, ops_per_batch, 1, 1, 1), render(url), settings.amqp_url, namespace
        )
        services = await start_services(1, "consume", env, log_dir)
        offset = _size(server_log)
        orders = OrderIds()

        async def scenario(driver: Driver) -> None:
            requests = [order_batch(orders.take(ops_per_batch), "count") for _ in range(batches)]
            await driver.load(requests)

        await drive(settings.amqp_url, namespace, scenario, timeout=300, operation_sink=True)
        await services[0].stop()  # its last relay pass and pool close are logged too
        return tally(_read_from(server_log, offset), DATABASE)
    finally:
        for service in services:
            await service.stop(timeout=10)
        await delete_namespace(settings.amqp_url, namespace)
        await drop_database(url)
        shutil.rmtree(log_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--ops-per-batch", type=int, default=50)
    parser.add_argument(
        "--server-log", type=Path, default=Path("/var/log/postgresql/postgresql-15-main.log")
    )
    args = parser.parse_args()
    counts = asyncio.run(count(args.batches, args.ops_per_batch, args.server_log))
    operations = args.batches * args.ops_per_batch
    total = sum(counts.values())
    print(f"{total} statements logged for {operations} operations: {total / operations:.2f} each")
    for sql, n in counts.most_common():
        print(f"{n:7d} {n / operations:6.2f}/op  {sql}")


if __name__ == "__main__":
    main()
