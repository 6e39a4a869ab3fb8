"""Which database errors are transient, and of which kind: decided here, once, for the whole
service (asyncpg errors, and the same errors as SQLAlchemy wraps them)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError

from consumer.service_layer.faults import DatabaseUnavailable, Fault

# The database refused this transaction but the connection is fine: serialization failure,
# deadlock, lock not available (lock_timeout), statement cancelled (statement_timeout).
_REFUSED_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})
# Class 53, insufficient resources (disk full, out of memory, too many connections), passes
# when the pressure does.
_REFUSED_CLASSES = ("53",)
# The connection or the server went away: admin shutdown (a restart, pg_terminate_backend),
# crash shutdown, cannot connect now (starting up), the outcome of a COMMIT unknown, and a
# read-only transaction (we reached a standby: reconnecting finds the new primary).
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40003", "25006"})
_LOST_CLASSES = ("08",)  # connection exceptions


def classify(exc: BaseException) -> Fault:
    """The kind of fault `exc` is (see Fault); BUG for anything not transient."""
    exc = _unwrapped(exc)
    if isinstance(exc, DatabaseUnavailable):
        return Fault.UNREACHABLE
    if isinstance(exc, asyncpg.PostgresError):
        return _by_sqlstate(str(getattr(exc, "sqlstate", "") or ""))
    if isinstance(exc, asyncpg.exceptions.OutdatedSchemaCacheError):
        return Fault.REFUSED
    if isinstance(exc, asyncpg.InterfaceError):
        # Bad arguments are ValueErrors (DataError, ClientConfigurationError): bugs. The rest
        # ("connection is closed", "another operation is in progress") mean a broken link.
        return Fault.BUG if isinstance(exc, ValueError) else Fault.LOST
    if isinstance(exc, asyncpg.exceptions.InternalClientError | OSError):
        # A protocol left mid-operation by a broken connection; refused, reset, silent (a
        # TimeoutError is an OSError) or unknown host.
        return Fault.LOST
    return Fault.BUG


def connection_broken(exc: BaseException) -> bool:
    """Whether the connection that raised `exc` must be thrown away rather than reused."""
    if not isinstance(exc, Exception):
        return True  # cancelled mid-statement: the protocol is left in between
    if isinstance(exc, asyncpg.PostgresError) and exc.severity in ("FATAL", "PANIC"):
        return True  # these end the session; an ERROR only ends the transaction
    return classify(exc) in (Fault.LOST, Fault.UNREACHABLE)


def _by_sqlstate(state: str) -> Fault:
    if state in _REFUSED_SQLSTATES or state.startswith(_REFUSED_CLASSES):
        return Fault.REFUSED
    if state in _LOST_SQLSTATES or state.startswith(_LOST_CLASSES):
        return Fault.LOST
    return Fault.BUG


def _unwrapped(exc: BaseException) -> BaseException:
    """The driver's own error inside SQLAlchemy's wrappers."""
    for _ in range(4):
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            exc = exc.orig
        elif exc.__cause__ is not None and type(exc).__module__.startswith("sqlalchemy"):
            exc = exc.__cause__
        else:
            break
    return exc
