"""One batch at a time across every consumer process, when the operator asks for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import bindparam, func, select

from consumer.adapters.pg import ConnectionPool, Session, Statement
from consumer.service_layer.retry import Transactions

# Advisory lock key of "batchops batches" (any constant shared by every process works).
_LOCK_KEY = 0x62617463686F7073
_LOCK = Statement(select(func.pg_advisory_xact_lock(bindparam("key"))))


class SerialGate:
    """Held around each batch: an asyncio lock inside the process, then a PostgreSQL advisory
    lock across processes, on a connection kept for the batch's duration. Batches then run one
    after another in the order they are taken. Taking the lock waits out database faults like
    any other transaction (an outage spends no delivery attempt).

    The lock belongs to a transaction left open until the batch is done (rolling it back
    releases it): a session-level lock would outlive its transaction, which a connection pooler
    in transaction mode (PgBouncer) then hands to other clients' transactions."""

    def __init__(self, pool: ConnectionPool, transactions: Transactions) -> None:
        self._pool = pool
        self._transactions = transactions
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        async with self._local:
            session = await self._transactions.retry(self._lock)
            try:
                yield
            finally:
                # The rollback on release ends the transaction, and the lock with it (as does a
                # lost connection).
                await self._pool.release(session)

    async def _lock(self) -> Session:
        session = await self._pool.acquire()
        try:
            await session.fetchval(_LOCK, {"key": _LOCK_KEY})  # held until the rollback
        except BaseException:
            await self._pool.release(session)
            raise
        return session
