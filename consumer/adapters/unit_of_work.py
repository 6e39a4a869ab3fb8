"""The unit of work over one pooled asyncpg connection."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from consumer.adapters.batches import SqlBatchRepository
from consumer.adapters.marketplace import SqlMarketplaceRepository
from consumer.adapters.outbox import SqlOutboxRepository
from consumer.adapters.pg import ConnectionPool, Session
from consumer.service_layer.unit_of_work import AbstractUnitOfWork


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

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        return self._require_session().savepoint()

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
