"""What kind of trouble an exception from the database is: the words the service layer uses to
decide between retrying, waiting for the database and reporting a failure.

The adapters decide which exception is which (`consumer.adapters.db_faults.classify`); the
service layer only ever asks that one function.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class Fault(enum.Enum):
    # Not a fault of the database: a bug, or input the database rightly refuses.
    BUG = "bug"
    # The database answered and refused this transaction (deadlock, serialization failure,
    # lock or statement timeout): the same transaction may well succeed next time.
    REFUSED = "refused"
    # The connection broke under the transaction (reset, server restarting, silent): whether
    # it committed is unknown until the database is asked again.
    LOST = "lost"
    # No connection could be made at all: the database is down or out of reach.
    UNREACHABLE = "unreachable"

    @property
    def transient(self) -> bool:
        return self is not Fault.BUG


Classifier = Callable[[BaseException], Fault]


class DatabaseUnavailable(Exception):
    """No connection to the database could be made: nothing can be read or recorded, so the
    work in hand waits until the database answers again."""


def never_transient(exc: BaseException) -> Fault:  # noqa: ARG001 - the signature of a Classifier
    """The classifier of a store that has no transient faults (an in-memory one)."""
    return Fault.BUG


def describe(exc: BaseException) -> str:
    """One line naming what went wrong, following the cause chain to its root."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
