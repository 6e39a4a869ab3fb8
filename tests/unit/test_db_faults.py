"""The one classification of database errors, case by case (built as asyncpg raises them)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from consumer.adapters.db_faults import classify, connection_broken
from consumer.service_layer.faults import DatabaseUnavailable, Fault


def server_error(sqlstate: str, message: str, severity: str = "ERROR") -> asyncpg.PostgresError:
    """The exception asyncpg builds from the server's ErrorResponse."""
    error: asyncpg.PostgresError = asyncpg.PostgresError.new(
        {"S": severity, "C": sqlstate, "M": message}
    )
    return error


class TestTheDatabaseRefusedTheTransaction:
    @pytest.mark.parametrize(
        ("sqlstate", "message"),
        [
            ("40P01", "deadlock detected"),
            ("40001", "could not serialize access due to concurrent update"),
            ("55P03", "canceling statement due to lock timeout"),
            ("57014", "canceling statement due to statement timeout"),
            ("53300", "sorry, too many clients already"),
            ("53100", "could not extend file: No space left on device"),
        ],
    )
    def test_it_is_refused_and_the_connection_stays_usable(self, sqlstate, message):
        error = server_error(sqlstate, message)

        assert classify(error) is Fault.REFUSED
        assert not connection_broken(error)


class TestTheConnectionWasLost:
    @pytest.mark.parametrize(
        "error",
        [
            ConnectionRefusedError(111, "Connection refused"),
            ConnectionResetError(104, "Connection reset by peer"),
            TimeoutError(),
            OSError(113, "No route to host"),
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            asyncpg.exceptions.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            ),
            asyncpg.exceptions.ProtocolError("unexpected message"),
        ],
        ids=type,
    )
    def test_a_broken_link_is_lost_and_the_connection_is_thrown_away(self, error):
        assert classify(error) is Fault.LOST
        assert connection_broken(error)

    @pytest.mark.parametrize(
        ("sqlstate", "message"),
        [
            ("57P01", "terminating connection due to administrator command"),
            ("57P02", "terminating connection because of crash of another server process"),
            ("57P03", "the database system is starting up"),
            ("08006", "connection failure"),
            ("40003", "statement completion unknown"),
            ("25006", "cannot execute UPDATE in a read-only transaction"),
        ],
    )
    def test_a_server_going_away_is_lost(self, sqlstate, message):
        error = server_error(sqlstate, message, severity="FATAL")

        assert classify(error) is Fault.LOST
        assert connection_broken(error)


class TestNoConnectionAtAll:
    def test_an_unreachable_database_is_unreachable(self):
        error = DatabaseUnavailable("cannot connect to the database")

        assert classify(error) is Fault.UNREACHABLE
        assert connection_broken(error)


class TestNotTransient:
    @pytest.mark.parametrize(
        "error",
        [
            server_error(
                "23505", 'duplicate key value violates unique constraint "uq_users_email"'
            ),
            server_error("22P05", "unsupported Unicode escape sequence"),
            server_error("42P01", 'relation "orders" does not exist'),
            asyncpg.DataError("invalid input for query argument $1: 1099511627776"),
            KeyError("status"),
            ValueError("boom"),
        ],
        ids=type,
    )
    def test_bugs_and_refused_input_are_not_retried_and_keep_the_connection(self, error):
        assert classify(error) is Fault.BUG
        assert not connection_broken(error)

    def test_a_fatal_error_of_another_kind_still_ends_the_connection(self):
        error = server_error("28000", "role is not permitted to log in", severity="FATAL")

        assert classify(error) is Fault.BUG
        assert connection_broken(error)

    def test_a_cancelled_statement_leaves_the_connection_half_way(self):
        assert connection_broken(asyncio.CancelledError())


class TestWrappedBySqlalchemy:
    def test_the_driver_error_inside_sqlalchemy_decides(self):
        wrapped = OperationalError("SELECT 1", {}, server_error("57P01", "terminating", "FATAL"))

        assert classify(wrapped) is Fault.LOST

    def test_a_wrapped_bug_stays_a_bug(self):
        wrapped = DBAPIError("INSERT", {}, server_error("23505", "duplicate key"))

        assert classify(wrapped) is Fault.BUG
