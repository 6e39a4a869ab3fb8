"""What the database does per operation for the raw baseline, batchops and the naive peer:
rows inserted, updated and deleted per table, transactions, and the SQL statements.

    python -m bench.statements [--batches 40] [--ops-per-batch 50] [--no-peer] [--json]
                               [--server-log /var/log/postgresql/postgresql-15-main.log]

Creates a database of its own (`batchops_bench_statements_…`, with `log_statement = 'all'`, a
setting of that database only) and runs, one after the other, the same number of operations
(`--batches` × `--ops-per-batch` order updates, every one on an order of its own):

- raw baseline: asyncpg alone on one connection, batch by batch (a batch row each);
- batchops: one `batchops consume`, the batches published at once (1 = one batch alone, where
  the relay makes a pass per commit);
- peer: one naive peer (bench/peers/naive.py), the same batches at once (`--no-peer`: left out).

Rows and transactions come from the server's counters (pg_stat_user_tables, pg_stat_database)
read before and after each phase, once its connections closed; they include the work a phase
does per batch (claiming, finishing, relaying), divided over its operations. Statements come
from the lines the server logged for the database during each phase, which needs the server's
log file to be readable (a local server, stderr logging; otherwise they are left out). An empty
query (`;`, what a pool pre-ping sends between BEGIN and ROLLBACK) is not logged: count it from
the ROLLBACKs. Prints a table, or one JSON line with `--json`. Everything created is removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import URL

from bench.counters import DbCounters, DbWork
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
from bench.phases import PEER_MODULE, ROOT, require_peer
from bench.raw import run_raw_untimed
from bench.service import start_services
from consumer.config import Settings

TITLES = {"raw": "raw baseline"}
_LOGGED = re.compile(r"LOG:  (?:statement|execute [^:]*): (?P<sql>.*)", re.DOTALL)


def tally(log_text: str, database: str) -> Counter[str]:
    """Statements logged for `database`, keyed by their first 90 characters (whitespace
    collapsed; a statement's later lines are the log lines that start with a tab)."""
    messages: list[str] = []
    for line in log_text.splitlines():
        if line.startswith("\t") and messages:
            messages[-1] += " " + line
        else:
            messages.append(line)
    counts: Counter[str] = Counter()
    for message in messages:
        if f"@{database} " not in message:  # Debian's log_line_prefix: `… user@database `
            continue
        match = _LOGGED.search(message)
        if match is not None:
            counts[re.sub(r"\s+", " ", match["sql"]).strip()[:90]] += 1
    return counts


class ServerLog:
    """The server's log file, read between two offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size

    def read(self, start: int, end: int) -> str:
        with self.path.open("rb") as log:
            log.seek(start)
            return log.read(end - start).decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Measured:
    """One phase's database work, and its statements when the log could be read."""

    work: DbWork
    statements: Counter[str] | None


async def _measure(
    url: URL, log: ServerLog | None, operations: int, phase: Callable[[], Awaitable[None]]
) -> Measured:
    before = await DbCounters.read(url)
    start = log.offset() if log else 0
    await phase()
    # The phase's statements were logged as they ran, so the log ends here for it; the
    # snapshot below is left out.
    end = log.offset() if log else 0
    after = await DbCounters.read(url)  # waits until the phase's connections closed
    statements = tally(log.read(start, end), str(url.database)) if log else None
    return Measured(after.since(before, operations), statements)


async def _service_load(
    url: URL,
    amqp_url: str,
    orders: OrderIds,
    batches: int,
    size: int,
    *,
    peer: bool,
    log_dir: Path,
) -> None:
    """One process (batchops or the peer) on a namespace of its own, every batch at once."""
    namespace = new_namespace()
    env = service_env(Options(batches, size, 1, 1, 1), render(url), amqp_url, namespace)
    argv = None
    if peer:
        env["PYTHONPATH"] = str(ROOT)
        argv = [sys.executable, "-m", PEER_MODULE]
    label = "peer" if peer else "consume"
    services = await start_services(1, "consume", env, log_dir, argv=argv, label=label)

    async def scenario(driver: Driver) -> None:
        await driver.load([order_batch(orders.take(size), "count") for _ in range(batches)])

    try:
        await drive(amqp_url, namespace, scenario, timeout=300, operation_sink=True)
    finally:
        for service in services:  # its last relay pass and pool close are counted too
            await service.stop()
        await delete_namespace(amqp_url, namespace)


async def count(
    batches: int, ops_per_batch: int, server_log: Path, *, peer: bool
) -> dict[str, Measured]:
    """Each phase's work over `batches` × `ops_per_batch` operations, by phase name (raw,
    batchops, peer)."""
    settings = Settings()
    require_local(settings.database_url, settings.amqp_url)
    if peer:
        require_peer()
    url = bench_url(settings.database_url, f"batchops_bench_statements_{uuid.uuid4().hex[:10]}")
    log = ServerLog(server_log) if os.access(server_log, os.R_OK) else None
    if log is None:
        print(f"statements: {server_log} is not readable: no statement counts", file=sys.stderr)
    operations = batches * ops_per_batch
    log_dir = Path(tempfile.mkdtemp(prefix="batchops-bench-"))
    orders = OrderIds()
    measured: dict[str, Measured] = {}
    try:
        await create_database(url, (3 if peer else 2) * operations + 10)
        await execute_admin(url, f"ALTER DATABASE \"{url.database}\" SET log_statement = 'all'")
        dsn = render(url.set(drivername="postgresql"))
        raw = partial(run_raw_untimed, dsn, orders, operations=operations, chunk=ops_per_batch)
        measured["raw"] = await _measure(url, log, operations, raw)
        for name in ("batchops", "peer") if peer else ("batchops",):
            load = partial(
                _service_load,
                url,
                settings.amqp_url,
                orders,
                batches,
                ops_per_batch,
                peer=name == "peer",
                log_dir=log_dir,
            )
            measured[name] = await _measure(url, log, operations, load)
        return measured
    finally:
        await drop_database(url)
        shutil.rmtree(log_dir, ignore_errors=True)


def as_json(measured: dict[str, Measured]) -> dict[str, Any]:
    return {
        name: {
            "operations": m.work.operations,
            "db_per_operation": m.work.per_operation(),
            "rows_per_operation_by_table": m.work.per_table(),
            "statements_per_operation": (
                round(m.statements.total() / m.work.operations, 2) if m.statements else None
            ),
        }
        for name, m in measured.items()
    }


def as_text(measured: dict[str, Measured]) -> str:
    """Rows per operation by table, phases side by side; then each phase's statements."""
    names = list(measured)
    operations = next(iter(measured.values())).work.operations
    tables = sorted({t for m in measured.values() for t in m.work.per_table()})
    width = 22

    def line(label: str, cells: list[str]) -> str:
        return f"{label:<20}" + "".join(f"{cell:>{width}}" for cell in cells)

    def rows(work: DbWork, table: str | None) -> str:
        figures = work.per_table().get(table, {}) if table else None
        if table is None:
            per_op = work.per_operation()
            figures = {k: per_op[f"rows_{k}"] for k in ("inserted", "updated", "deleted")}
        if not figures:
            return "-"
        return " / ".join(f"{figures[k]:.2f}" for k in ("inserted", "updated", "deleted"))

    lines = [
        f"Per operation, {operations} operations in each phase; rows inserted / updated / deleted:",
        line("", [TITLES.get(n, n) for n in names]),
        *(line(t, [rows(measured[n].work, t) for n in names]) for t in tables),
        line("all tables", [rows(measured[n].work, None) for n in names]),
        line(
            "transactions",
            [f"{measured[n].work.per_operation()['transactions']:.2f}" for n in names],
        ),
    ]
    if all(m.statements is not None for m in measured.values()):
        lines.append(line("statements", [f"{_per_op(measured[n]):.2f}" for n in names]))
    for name, m in measured.items():
        if m.statements:
            title = TITLES.get(name, name)
            lines += ["", f"{title}: {m.statements.total()} statements logged:"]
            lines += [
                f"{n:7d} {n / operations:6.2f}/op  {sql}" for sql, n in m.statements.most_common()
            ]
    return "\n".join(lines)


def _per_op(m: Measured) -> float:
    return m.statements.total() / m.work.operations if m.statements else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--ops-per-batch", type=int, default=50)
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="leave the peer out")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    parser.add_argument(
        "--server-log", type=Path, default=Path("/var/log/postgresql/postgresql-15-main.log")
    )
    args = parser.parse_args()
    measured = asyncio.run(count(args.batches, args.ops_per_batch, args.server_log, peer=args.peer))
    print(json.dumps(as_json(measured)) if args.json else as_text(measured))


if __name__ == "__main__":
    main()
