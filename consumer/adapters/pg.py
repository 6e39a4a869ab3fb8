"""The executor's database access: SQLAlchemy Core statements run straight on asyncpg.

The statements are still written with SQLAlchemy Core (tables.py is the one schema), but each is
compiled once, when its module loads, to the `$n` SQL asyncpg prepares and caches. Executing
through SQLAlchemy's engine cost more CPU per operation than the round trip itself (parameter
processing, result rows, the greenlet bridge); what remains per statement is asyncpg's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from consumer.adapters.db_faults import classify, connection_broken
from consumer.adapters.statements import statement_cache_size
from consumer.service_layer.faults import DatabaseUnavailable, Fault, describe

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
        # Values fixed in the statement itself (e.g. the 1 of `counter + 1`); every other
        # parameter must be given, so that a misspelt name fails instead of binding NULL.
        self._defaults = {
            name: compiled.params[name] for name in self._names if not compiled.binds[name].required
        }

    def arguments(self, params: _Params) -> list[object]:
        given = params or {}
        defaults = self._defaults
        try:
            return [given[name] if name in given else defaults[name] for name in self._names]
        except KeyError as missing:
            raise KeyError(f"no value for parameter {missing} of: {self.sql}") from None


@dataclass(frozen=True, slots=True)
class Deferrable:
    """A write that may wait for the next statement of its transaction and ride along in it as
    a CTE named `key`, saving a round trip. Only writes that no constraint can refuse qualify:
    their errors would otherwise surface at the later statement."""

    key: str
    alone: Statement  # the write by itself, for when no statement can take it along


class Session:
    """One pooled connection with SQLAlchemy's autobegin: the first statement opens a
    transaction, and it stays open until `commit()` or `rollback()`.

    A statement that fails in a way that leaves the connection unusable (the link broke, the
    server ended the session, the call was cancelled mid-way) marks the session `broken`: the
    pool then throws the connection away instead of handing it out again half-way through a
    protocol exchange."""

    __slots__ = ("_connection", "_deferred", "_open", "broken", "chained", "server_gone")

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._open = False
        # True from a chained commit until the next statement: the open transaction is empty.
        self.chained = False
        self._deferred: tuple[Deferrable, Mapping[str, object]] | None = None
        self.broken = False
        # The server itself went away (restart, terminate): its other connections are dead too.
        self.server_gone = False

    async def fetch(self, statement: Statement, params: _Params = None) -> Any:
        await self._prepare()
        return await self._run(self._connection.fetch, statement, params)

    async def fetchrow(self, statement: Statement, params: _Params = None) -> Record | None:
        await self._prepare()
        row: Record | None = await self._run(self._connection.fetchrow, statement, params)
        return row

    async def fetchval(self, statement: Statement, params: _Params = None) -> Any:
        await self._prepare()
        return await self._run(self._connection.fetchval, statement, params)

    async def execute(self, statement: Statement, params: _Params = None) -> None:
        await self._prepare()
        await self._run(self._connection.execute, statement, params)

    async def fetch_alone(self, statement: Statement, params: _Params = None) -> Any:
        """Run one statement as a transaction of its own, without BEGIN and COMMIT (two round
        trips saved): for a write complete by itself. No transaction may be open."""
        self._require_no_transaction()
        return await self._run(self._connection.fetch, statement, params)

    async def executemany_alone(
        self, statement: Statement, rows: Sequence[Mapping[str, object]]
    ) -> None:
        """Run `statement` once per row of parameters, pipelined in one round trip and one
        transaction of its own (all rows or none). No transaction may be open."""
        self._require_no_transaction()
        arguments = [statement.arguments(row) for row in rows]
        try:
            await self._connection.executemany(statement.sql, arguments)
        except BaseException as exc:
            self._note(exc)
            raise

    async def defer(self, write: Deferrable, params: Mapping[str, object]) -> None:
        """Hold `write` back until the next statement (or the commit) runs."""
        await self._prepare()
        self._deferred = (write, params)

    async def execute_with_deferred(
        self, variants: Mapping[str | None, Statement], params: Mapping[str, object]
    ) -> Any:
        """Run the variant of a statement that carries the deferred write (`variants[key]`),
        or the plain one (`variants[None]`) when nothing is deferred; returns the first value
        of its first row (None when it returned none)."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None and deferred[0].key in variants:
            write, write_params = deferred
            self.chained = False
            await self._begin()
            statement, arguments = variants[write.key], {**params, **write_params}
            return await self._run(self._connection.fetchval, statement, arguments)
        self._deferred = deferred
        return await self.fetchval(variants[None], params)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A savepoint in the open transaction (see AbstractUnitOfWork.savepoint)."""
        await self._prepare()
        await self._raw("SAVEPOINT operation")
        try:
            yield
            await self.flush()
        except BaseException:
            self._deferred = None
            if not self.broken:
                await self._raw("ROLLBACK TO SAVEPOINT operation")
            raise
        await self._raw("RELEASE SAVEPOINT operation")

    async def flush(self) -> None:
        if self._deferred is not None:
            await self._prepare()

    async def commit(self, *, chain: bool = False) -> None:
        """Commit; with `chain`, open the next transaction in the same round trip (PostgreSQL
        runs `BEGIN` only if the `COMMIT` before it succeeded)."""
        await self.flush()
        if self._open:
            self._open = False
            await self._raw("COMMIT; BEGIN" if chain else "COMMIT")
            self._open = chain
            self.chained = chain

    async def rollback(self) -> None:
        self._deferred = None
        self.chained = False
        if self._open:
            self._open = False
            await self._raw("ROLLBACK")

    def _require_no_transaction(self) -> None:
        if self._open or self._deferred is not None:
            raise RuntimeError("a statement run alone needs a session with no transaction open")

    async def _prepare(self) -> None:
        """Open the transaction, and run a deferred write before anything that may see it."""
        self.chained = False
        await self._begin()
        if self._deferred is not None:
            (write, params), self._deferred = self._deferred, None
            await self._run(self._connection.execute, write.alone, params)

    async def _begin(self) -> None:
        if not self._open:
            await self._raw("BEGIN")
            self._open = True

    async def _run(self, method: Any, statement: Statement, params: _Params) -> Any:
        arguments = statement.arguments(params)
        try:
            return await method(statement.sql, *arguments)
        except BaseException as exc:
            self._note(exc)
            raise

    async def _raw(self, sql: str) -> None:
        try:
            await self._connection.execute(sql)
        except BaseException as exc:
            self._note(exc)
            raise

    def _note(self, exc: BaseException) -> None:
        if connection_broken(exc):
            self.broken = True
            self.server_gone = self.server_gone or classify(exc) is Fault.LOST


class ConnectionPool:
    """asyncpg connections for units of work, opened on first use (so that the service starts
    while the database is still down) and returned without asyncpg's reset query: the unit of
    work already ends its transaction, and the reset would cost a round trip per operation.

    Failing to connect raises DatabaseUnavailable, whatever the reason: until a connection can
    be made, work waits for the database instead of failing."""

    def __init__(
        self,
        database_url: str,
        *,
        size: int,
        command_timeout: float | None,
        connect_timeout: float = 10.0,
    ) -> None:
        # The same URL the engines take, read the way SQLAlchemy reads it (e.g. `?ssl=`).
        _, self._connect_args = _DIALECT.create_connect_args(make_url(database_url))  # type: ignore[no-untyped-call]
        for option in _SQLALCHEMY_ONLY_OPTIONS:
            self._connect_args.pop(option, None)
        self._connect_args["timeout"] = connect_timeout
        self._statement_cache_size = statement_cache_size(database_url)
        self._size = size
        self._command_timeout = command_timeout
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def acquire(self) -> Session:
        if self._closed:
            # Shutting down: to whoever still asks, the database is as gone as in an outage.
            raise DatabaseUnavailable("the connection pool is closed")
        try:
            pool = self._pool or await self._open()
            connection = await pool.acquire()
        except Exception as exc:
            raise DatabaseUnavailable(f"cannot connect to the database: {describe(exc)}") from exc
        return Session(connection)

    async def probe(self) -> None:
        """Raise DatabaseUnavailable unless a new connection can be made and answers a query
        (a connection of its own: the pool's may all be busy, or dead since a restart)."""
        try:
            connection = await asyncpg.connect(**self._connect_args)
            try:
                # The simple query protocol: no statement is prepared (a transaction pooler may
                # hand its two steps to different server connections outside a transaction).
                await connection.execute("SELECT 1", timeout=self._connect_args["timeout"])
            finally:
                connection.terminate()
        except Exception as exc:
            raise DatabaseUnavailable(f"the database does not answer: {describe(exc)}") from exc

    async def release(self, session: Session) -> None:
        """Roll back what was not committed and return the connection. A broken one, or one
        whose transaction cannot be ended (silent past the command timeout), is closed
        instead, which rolls it back on the server just as well; the pool opens a new one
        when needed."""
        connection = session._connection
        try:
            if not (session.broken or _is_closed(connection)):
                await session.rollback()
        except Exception:  # noqa: BLE001 - whatever went wrong, the connection is unusable
            session.broken = True
            session.server_gone = session.server_gone or _is_closed(connection)
        except BaseException:  # cancelled: end it the same way and let the cancellation through
            session.broken = True
            raise
        finally:
            await self._give_back(session)

    async def _give_back(self, session: Session) -> None:
        connection = session._connection
        pool = self._pool
        if pool is None or session.broken or _is_closed(connection):
            _terminate(connection)
        if pool is None:  # closed meanwhile: nothing to return it to
            return
        if session.server_gone or _is_closed(connection):
            # The server went away (a restart): every idle connection is dead too, so replace
            # them all rather than fail on each in turn.
            await pool.expire_connections()
        await pool.release(connection)

    async def close(self, timeout: float) -> None:
        """Close gracefully once every connection is back; after `timeout`, close regardless."""
        self._closed = True
        pool = self._pool
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except TimeoutError:
            pool.terminate()
        finally:
            self._pool = None

    async def _open(self) -> Any:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    **self._connect_args,
                    min_size=0,
                    max_size=self._size,
                    command_timeout=self._command_timeout,
                    statement_cache_size=self._statement_cache_size,
                    reset=_end_stray_transaction,
                )
            return self._pool


def _terminate(connection: Any) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):  # the pool already detached it
        connection.terminate()


def _is_closed(connection: Any) -> bool:
    try:
        return bool(connection.is_closed())
    except asyncpg.InterfaceError:
        return True  # the pool already detached it, having seen it close


async def _end_stray_transaction(connection: Any) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")
