"""One batch at a time across every consumer process, when the operator asks for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import bindparam, func, select

from consumer.adapters.pg import ConnectionPool, Session, Statement
from consumer.service_layer.retry import Transactions

# pg_advisory_lock key of "batchops batches" (any constant shared by every process works).
_LOCK_KEY = 0x62617463686F7073
_LOCK = Statement(select(func.pg_advisory_lock(bindparam("key"))))
_UNLOCK = Statement(select(func.pg_advisory_unlock(bindparam("key"))))


class SerialGate:
    """Held around each batch: an asyncio lock inside the process, then a PostgreSQL advisory
    lock across processes, on a connection kept for the batch's duration. Batches then run one
    after another in the order they are taken. Taking the lock waits out database faults like
    any other transaction (an outage spends no delivery attempt)."""

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
                # A lost connection released the lock with it: nothing left to undo then.
                with contextlib.suppress(Exception):
                    await session.fetchval(_UNLOCK, {"key": _LOCK_KEY})
                    await session.commit()
                await self._pool.release(session)

    async def _lock(self) -> Session:
        session = await self._pool.acquire()
        try:
            await session.fetchval(_LOCK, {"key": _LOCK_KEY})
            await session.commit()  # a session-level lock: it outlives the transaction
        except BaseException:
            await self._pool.release(session)
            raise
        return session
