"""Core statements compiled once for asyncpg (consumer/adapters/pg.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select, update

from consumer.adapters.pg import Statement
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
