"""The executor's database access: SQLAlchemy Core statements run straight on asyncpg.

The statements are still written with SQLAlchemy Core (tables.py is the one schema), but each is
compiled once, when its module loads, to the `$n` SQL asyncpg prepares and caches. Executing
through SQLAlchemy's engine cost more CPU per operation than the round trip itself (parameter
processing, result rows, the greenlet bridge); what remains per statement is asyncpg's own work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
_Params = Mapping[str, object] | None
Record = Mapping[str, Any]
_SQLALCHEMY_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")


class Statement:
    """A Core statement compiled for asyncpg, with its named parameters in `$n` order."""

    __slots__ = ("_defaults", "_names", "sql")

    def __init__(self, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)  # noqa: S101 - a statement, not DDL
        self.sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Values fixed in the statement itself (e.g. the 1 of `counter + 1`).
        self._defaults = {name: compiled.params[name] for name in self._names}

    def arguments(self, params: _Params) -> list[object]:
        if params is None:
            return [self._defaults[name] for name in self._names]
        defaults = self._defaults
        return [params[name] if name in params else defaults[name] for name in self._names]


class Session:
    """One pooled connection with SQLAlchemy's autobegin: the first statement opens a
    transaction, and it stays open until `commit()` or `rollback()`."""

    __slots__ = ("_connection", "_open")

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._open = False

    async def fetch(self, statement: Statement, params: _Params = None) -> Any:
        await self._begin()
        return await self._connection.fetch(statement.sql, *statement.arguments(params))

    async def fetchrow(self, statement: Statement, params: _Params = None) -> Record | None:
        await self._begin()
        row: Record | None = await self._connection.fetchrow(
            statement.sql, *statement.arguments(params)
        )
        return row

    async def fetchval(self, statement: Statement, params: _Params = None) -> Any:
        await self._begin()
        return await self._connection.fetchval(statement.sql, *statement.arguments(params))

    async def execute(self, statement: Statement, params: _Params = None) -> None:
        await self._begin()
        await self._connection.execute(statement.sql, *statement.arguments(params))

    async def commit(self) -> None:
        if self._open:
            self._open = False
            await self._connection.execute("COMMIT")

    async def rollback(self) -> None:
        if self._open:
            self._open = False
            await self._connection.execute("ROLLBACK")

    async def _begin(self) -> None:
        if not self._open:
            await self._connection.execute("BEGIN")
            self._open = True


class ConnectionPool:
    """asyncpg connections for units of work, opened on first use (so that the service starts
    while the database is still down) and returned without asyncpg's reset query: the unit of
    work already ends its transaction, and the reset would cost a round trip per operation."""

    def __init__(self, database_url: str, *, size: int, command_timeout: float | None) -> None:
        # The same URL the engines take, read the way SQLAlchemy reads it (e.g. `?ssl=`).
        _, self._connect_args = _DIALECT.create_connect_args(make_url(database_url))  # type: ignore[no-untyped-call]
        for option in _SQLALCHEMY_ONLY_OPTIONS:
            self._connect_args.pop(option, None)
        self._size = size
        self._command_timeout = command_timeout
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def acquire(self) -> Session:
        pool = self._pool or await self._open()
        return Session(await pool.acquire())

    async def release(self, session: Session) -> None:
        """Roll back what was not committed and return the connection. One whose transaction
        cannot be ended (broken, or silent past the command timeout) is closed instead, which
        rolls it back on the server just as well; the pool opens a new one when needed."""
        connection = session._connection
        try:
            await session.rollback()
        except Exception:  # noqa: BLE001 - whatever went wrong, the connection is unusable
            connection.terminate()
        except BaseException:  # cancelled: end it the same way and let the cancellation through
            connection.terminate()
            raise
        finally:
            await self._pool.release(connection)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _open(self) -> Any:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    **self._connect_args,
                    min_size=0,
                    max_size=self._size,
                    command_timeout=self._command_timeout,
                    statement_cache_size=256,
                    reset=_end_stray_transaction,
                )
            return self._pool


async def _end_stray_transaction(connection: Any) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")
