"""Core statements compiled once for asyncpg, and the session that runs them
(consumer/adapters/pg.py)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import bindparam, select, update

from consumer.adapters import batches, marketplace, outbox
from consumer.adapters.pg import Session, Statement
from consumer.adapters.tables import batch_operations, orders


class TestStatement:
    def test_parameters_are_bound_in_the_order_of_their_placeholders(self) -> None:
        statement = Statement(
            select(orders.c.id).where(
                orders.c.status == bindparam("status"), orders.c.id == bindparam("id")
            )
        )

        assert "$1" in statement.sql
        assert "$2" in statement.sql
        assert statement.arguments({"id": 7, "status": "pending"}) == ["pending", 7]

    def test_values_written_into_the_statement_need_no_parameter(self) -> None:
        counter = batch_operations.c.completed_operations
        statement = Statement(
            update(batch_operations)
            .where(batch_operations.c.batch_id == bindparam("batch_id"))
            .values({counter: counter + 1})
        )

        assert statement.arguments({"batch_id": "b"}) == [1, "b"]

    def test_a_missing_parameter_fails_instead_of_binding_null(self) -> None:
        statement = Statement(select(orders.c.id).where(orders.c.id == bindparam("id")))

        with pytest.raises(KeyError, match="no value for parameter 'id'"):
            statement.arguments({"order_id": 7})


class HalfWayConnection:
    """The edge of asyncpg: a connection whose protocol was left mid-exchange, so that every
    call fails as asyncpg then fails, while it does not know it is closed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls: list[str] = []

    async def execute(self, sql: str, *args: object) -> None:
        self.calls.append(sql)
        raise self.error

    def is_closed(self) -> bool:
        return False


class TestSessionMarksBrokenConnections:
    @pytest.mark.parametrize(
        "error",
        [
            asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            ),
            TimeoutError(),
            ConnectionResetError(104, "Connection reset by peer"),
        ],
        ids=type,
    )
    async def test_a_failed_commit_marks_the_session_broken(self, error: Exception) -> None:
        session = Session(HalfWayConnection(error))
        session._open = True

        with pytest.raises(type(error)):
            await session.commit(chain=True)

        assert session.broken, "the pool must throw this connection away, not reuse it"

    async def test_an_ordinary_statement_error_keeps_the_connection(self) -> None:
        duplicate = asyncpg.PostgresError.new({"S": "ERROR", "C": "23505", "M": "duplicate key"})
        session = Session(HalfWayConnection(duplicate))

        with pytest.raises(asyncpg.PostgresError):
            await session.execute(Statement(select(orders.c.id)))

        assert not session.broken


def _statements() -> list[tuple[str, Statement]]:
    """Every statement the adapters compile when they load, by name."""
    found: list[tuple[str, Statement]] = []

    def visit(name: str, value: object) -> None:
        if isinstance(value, Statement):
            found.append((name, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{name}[{key}]", item)

    for module in (batches, marketplace, outbox):
        for name, value in vars(module).items():
            visit(f"{module.__name__}.{name}", value)
    return found


class TestEveryCompiledStatement:
    def test_there_are_statements_to_check(self) -> None:
        assert len(_statements()) > 20

    # Named by the statement alone: an id with an object's address would differ between
    # pytest-xdist's workers, which must collect the same tests.
    @pytest.mark.parametrize(
        ("name", "statement"), [pytest.param(n, s, id=n) for n, s in _statements()]
    )
    def test_none_needs_sqlalchemy_to_finish_compiling_it(
        self, name: str, statement: Statement
    ) -> None:
        # `IN (list)` and the like compile to placeholders only SQLAlchemy's own execution
        # expands: asyncpg would get them verbatim.
        assert "POSTCOMPILE" not in statement.sql, f"{name}: {statement.sql}"
