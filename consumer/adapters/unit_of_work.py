"""The unit of work over one pooled asyncpg connection, and which database errors are worth a
retry."""

from __future__ import annotations

import asyncpg
from sqlalchemy import select

from consumer.adapters.pg import ConnectionPool, Session, Statement
from consumer.adapters.repositories import (
    SqlBatchRepository,
    SqlMarketplaceRepository,
    SqlOutboxRepository,
)
from consumer.service_layer.unit_of_work import AbstractUnitOfWork

_PING = Statement(select(1))

# serialization_failure, deadlock_detected, admin/crash shutdown, cannot connect now; and
# class 08 (connection exceptions): the same transaction may well succeed next time.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})


class SqlUnitOfWork(AbstractUnitOfWork):
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._session: Session | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        if self._session is None:  # else: kept by a chained commit, with a transaction open
            session = await self._pool.acquire()
            self._session = session
            self.batches = SqlBatchRepository(session)
            self.marketplace = SqlMarketplaceRepository(session)
            self.outbox = SqlOutboxRepository(session)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *args: object) -> None:
        session = self._session
        if session is not None and not (exc_type is None and session.chained):
            await self.close()

    async def flush(self) -> None:
        await self._require_session().flush()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await self._pool.release(session)

    async def commit(self, *, chain: bool = False) -> None:
        await self._require_session().commit(chain=chain)

    async def rollback(self) -> None:
        await self._require_session().rollback()

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("use the unit of work as `async with uow:`")
        return self._session

    async def reachable(self) -> bool:
        try:
            session = await self._pool.acquire()
            try:
                await session.fetchval(_PING)
            finally:
                await self._pool.release(session)
        except Exception:  # noqa: BLE001 - any failure to answer means unreachable
            return False
        return True

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        if isinstance(exc, OSError | ConnectionError | TimeoutError):
            return True  # a refused, reset or silent connection
        if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError):
            return True  # the connection closed under us; ValueErrors are bad arguments
        sqlstate = getattr(exc, "sqlstate", None)
        if not isinstance(exc, asyncpg.PostgresError) or not isinstance(sqlstate, str):
            return False
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
