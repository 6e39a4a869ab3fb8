"""The unit of work over one AsyncSession, and which database errors are worth a retry."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumer.adapters.repositories import (
    SqlBatchRepository,
    SqlMarketplaceRepository,
    SqlOutboxRepository,
)
from consumer.service_layer.unit_of_work import AbstractUnitOfWork

# serialization_failure, deadlock_detected, admin/crash shutdown, cannot connect now; and
# class 08 (connection exceptions): the same transaction may well succeed next time.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})


class SqlUnitOfWork(AbstractUnitOfWork):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        self._session = self._sessions()
        self.batches = SqlBatchRepository(self._session)
        self.marketplace = SqlMarketplaceRepository(self._session)
        self.outbox = SqlOutboxRepository(self._session)
        return self

    async def __aexit__(self, *args: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.rollback()
            finally:
                await session.close()

    async def commit(self) -> None:
        await self._require_session().commit()

    async def rollback(self) -> None:
        await self._require_session().rollback()

    def _require_session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("use the unit of work as `async with uow:`")
        return self._session

    async def reachable(self) -> bool:
        try:
            async with self._sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure to answer means unreachable
            return False
        return True

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        if isinstance(exc, OSError | ConnectionError | TimeoutError):
            return True  # asyncpg surfaces a refused or reset connection as a bare OSError
        if not isinstance(exc, DBAPIError):
            return False
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        sqlstate = _sqlstate(exc)
        if sqlstate is None:
            return isinstance(exc, OperationalError)
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(("08",))


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return sqlstate if isinstance(sqlstate, str) else None
