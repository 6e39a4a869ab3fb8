"""The unit of work over one database connection, and which database errors are worth a retry.

A plain AsyncConnection rather than an ORM session: the repositories issue Core statements
only, and the session's bookkeeping was a third of the CPU spent per operation.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        connection = await self._engine.connect()
        self._connection = connection
        self.batches = SqlBatchRepository(connection)
        self.marketplace = SqlMarketplaceRepository(connection)
        self.outbox = SqlOutboxRepository(connection)
        return self

    async def __aexit__(self, *args: object) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.rollback()
            finally:
                await connection.close()

    async def commit(self) -> None:
        await self._require_connection().commit()

    async def rollback(self) -> None:
        await self._require_connection().rollback()

    def _require_connection(self) -> AsyncConnection:
        if self._connection is None:
            raise RuntimeError("use the unit of work as `async with uow:`")
        return self._connection

    async def reachable(self) -> bool:
        try:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
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
