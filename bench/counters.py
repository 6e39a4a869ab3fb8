"""What the database did during a phase: rows inserted, updated and deleted per table
(pg_stat_user_tables) and transactions (pg_stat_database), read before and after it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import URL

from bench.environment import render

# Every snapshot opens a connection to the bench database and runs one query there, which
# asyncpg prepares and then executes: two transactions (each step ends in a Sync), counted
# once that connection ends, i.e. in the next phase. Each phase's figure leaves them out.
READER_TRANSACTIONS = 2
_SNAPSHOT = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_del,
       (SELECT xact_commit + xact_rollback FROM pg_stat_database
        WHERE datname = current_database()) AS transactions
FROM pg_stat_user_tables
"""
_OPEN_BACKENDS = """
SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'
"""


@dataclass(frozen=True, slots=True)
class Rows:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __add__(self, other: Rows) -> Rows:
        return Rows(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
        )

    def __sub__(self, other: Rows) -> Rows:
        return Rows(
            self.inserted - other.inserted,
            self.updated - other.updated,
            self.deleted - other.deleted,
        )


@dataclass(frozen=True, slots=True)
class DbWork:
    """Transactions and rows per table over some operations: a phase's, or several summed."""

    operations: int = 0
    transactions: int = 0
    tables: dict[str, Rows] = field(default_factory=dict)

    def __add__(self, other: DbWork) -> DbWork:
        names = self.tables.keys() | other.tables.keys()
        return DbWork(
            self.operations + other.operations,
            self.transactions + other.transactions,
            {n: self.tables.get(n, Rows()) + other.tables.get(n, Rows()) for n in names},
        )

    @property
    def rows(self) -> Rows:
        return sum(self.tables.values(), Rows())

    def per_operation(self) -> dict[str, float]:
        """Transactions and rows (all tables) per operation, as `python -m bench` prints them."""
        rows = self.rows
        return {
            "transactions": self._per_op(self.transactions),
            "rows_inserted": self._per_op(rows.inserted),
            "rows_updated": self._per_op(rows.updated),
            "rows_deleted": self._per_op(rows.deleted),
        }

    def per_table(self) -> dict[str, dict[str, float]]:
        """Rows per operation of every table the phase touched."""
        return {
            name: {
                "inserted": self._per_op(rows.inserted),
                "updated": self._per_op(rows.updated),
                "deleted": self._per_op(rows.deleted),
            }
            for name, rows in sorted(self.tables.items())
            if rows != Rows()
        }

    def _per_op(self, count: int) -> float:
        return round(count / self.operations, 2) if self.operations else 0.0


@dataclass(frozen=True, slots=True)
class DbCounters:
    """The server's cumulative counters for the bench database at one moment."""

    transactions: int
    tables: dict[str, Rows]

    @classmethod
    async def read(cls, url: URL, timeout: float = 30.0) -> DbCounters:
        """Snapshot once no client is connected to the database: a backend hands its figures
        to the server's counters when it exits (PostgreSQL 15), before it leaves
        pg_stat_activity, so every phase that closed its connections is counted whole."""
        await _wait_until_no_client(url, timeout)
        conn = await asyncpg.connect(render(url.set(drivername="postgresql")), timeout=10)
        try:
            records = await conn.fetch(_SNAPSHOT)
        finally:
            await conn.close(timeout=10)
        return cls(
            transactions=int(records[0]["transactions"]) if records else 0,
            tables={
                r["relname"]: Rows(r["n_tup_ins"], r["n_tup_upd"], r["n_tup_del"]) for r in records
            },
        )

    def since(self, earlier: DbCounters, operations: int) -> DbWork:
        """What was done between `earlier` and this snapshot, for `operations` operations."""
        return DbWork(
            operations,
            self.transactions - earlier.transactions - READER_TRANSACTIONS,
            {name: rows - earlier.tables.get(name, Rows()) for name, rows in self.tables.items()},
        )


async def _wait_until_no_client(url: URL, timeout: float) -> None:
    """Poll pg_stat_activity (from the `postgres` database) until no client backend is
    connected to the bench database; a process that was just stopped may take a moment."""
    conn = await asyncpg.connect(
        render(url.set(drivername="postgresql", database="postgres")), timeout=10
    )
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval(_OPEN_BACKENDS, url.database):
            if time.monotonic() > deadline:
                raise TimeoutError(f"clients still connected to {url.database} after {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await conn.close(timeout=10)
