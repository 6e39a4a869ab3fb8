"""Database and broker failures an operator can fix, turned into one clear `CommandFailed` line.

Commands wrap their database or broker work in `database_errors(url)` / `broker_errors(url)`;
`main` prints the resulting `CommandFailed` as `batchops: <message>` without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import yarl
from aiormq.exceptions import AMQPError, ProbableAuthenticationError
from sqlalchemy import make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.database import create_engine, in_transaction
from consumer.entrypoints.exits import EXIT_BAD_INPUT, CommandFailed
from publisher import BatchopsError, CompletionTimeout, PublishError, TopologyMismatchError

T = TypeVar("T")
# SQLSTATEs worth their own advice; anything else is shown as PostgreSQL worded it.
_NO_SUCH_DATABASE = "3D000"
_NO_SUCH_TABLE = "42P01"
_LOGIN_REFUSED = ("28000", "28P01")


def database_address(database_url: str) -> str:
    """`host:port` of a SQLAlchemy URL, or of every host it names in `?host=` (never its
    password)."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return "<an unparsable BATCHOPS_DATABASE_URL>"
    hosts = url.query.get("host")
    if hosts:  # several hosts (or one) as query parameters: `?host=h1:5432&host=h2:5432`
        return ", ".join([hosts] if isinstance(hosts, str) else hosts)
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def broker_address(amqp_url: str) -> str:
    """`host:port` of an AMQP URL, or of each node it lists (never a password)."""
    addresses = []
    for node in amqp_url.split(","):
        url = yarl.URL(node.strip())
        default_port = 5671 if url.scheme == "amqps" else 5672
        addresses.append(f"{url.host or 'localhost'}:{url.explicit_port or default_port}")
    return ", ".join(addresses)


def _reason(exc: BaseException) -> str:
    """The short cause of a connection failure: 'Connection refused', not the whole repr."""
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno)
    # aiormq wraps socket errors as AMQPConnectionError(errno, text).
    if len(exc.args) == 2 and isinstance(exc.args[0], int) and isinstance(exc.args[1], str):
        code, text = exc.args
        return os.strerror(code) if code > 0 else text
    return str(exc) or type(exc).__name__


def in_database(database_url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `work(conn)` in one transaction for a command (see database.in_transaction),
    turning what an operator can fix into a CommandFailed."""
    with database_errors(database_url):
        return asyncio.run(in_transaction(database_url, work))


@contextlib.contextmanager
def database_errors(database_url: str) -> Iterator[None]:
    """Turn 'the database is down / missing / not migrated' into a CommandFailed."""
    address = database_address(database_url)
    try:
        yield
    except CommandFailed:
        raise
    except ArgumentError as exc:
        raise CommandFailed(
            f"BATCHOPS_DATABASE_URL is not a database URL: {exc}", EXIT_BAD_INPUT
        ) from exc
    except DBAPIError as exc:
        raise CommandFailed(_database_refusal(address, exc)) from exc
    except OSError as exc:  # refused, unknown host, timeout (TimeoutError is an OSError)
        raise CommandFailed(
            f"cannot reach the database at {address} ({_reason(exc)}): "
            "is PostgreSQL running and BATCHOPS_DATABASE_URL right?"
        ) from exc


def _database_refusal(address: str, exc: DBAPIError) -> str:
    state = getattr(exc.orig, "sqlstate", None)
    detail = str(exc.orig).strip() or type(exc.orig).__name__
    if state == _NO_SUCH_DATABASE:
        return f"the database at {address} says: {detail}; run `batchops db upgrade` to create it"
    if state == _NO_SUCH_TABLE:
        return f"the database at {address} is not migrated ({detail}); run `batchops db upgrade`"
    if state in _LOGIN_REFUSED:
        return f"the database at {address} refused the login ({detail})"
    return f"the database at {address} failed: {detail}"


@contextlib.contextmanager
def broker_errors(amqp_url: str) -> Iterator[None]:
    """Turn 'the broker is down / refuses us / disagrees on the topology' into a CommandFailed.

    CompletionTimeout (a TimeoutError, hence an OSError) passes through: it is no broker fault.
    """
    address = broker_address(amqp_url)
    try:
        yield
    except (CommandFailed, CompletionTimeout):
        raise
    except TopologyMismatchError as exc:
        raise CommandFailed(str(exc)) from exc
    except PublishError as exc:
        raise CommandFailed(f"the broker at {address} did not take the message: {exc}") from exc
    except BatchopsError as exc:
        raise CommandFailed(str(exc)) from exc
    except ProbableAuthenticationError as exc:
        raise CommandFailed(
            f"the broker at {address} refused the login ({_reason(exc)}): "
            "check the user and password in BATCHOPS_AMQP_URL"
        ) from exc
    except OSError as exc:  # aiormq's AMQPConnectionError is a ConnectionError too
        raise CommandFailed(
            f"cannot reach the broker at {address} ({_reason(exc)}): "
            "is RabbitMQ running and BATCHOPS_AMQP_URL right?"
        ) from exc
    except AMQPError as exc:  # a closed channel: access refused, precondition failed, ...
        if "Connection.OpenOk" in str(exc):  # the broker closed the connection while opening
            raise CommandFailed(
                f"the broker at {address} refused the connection: the virtual host in "
                "BATCHOPS_AMQP_URL does not exist or the user may not use it"
            ) from exc
        raise CommandFailed(f"the broker at {address} refused: {_reason(exc)}") from exc


def refuse_a_missing_schema(database_url: str) -> None:
    """Before a service starts: a database that answers but does not exist or is not migrated
    is a CommandFailed (the service would wait for it forever); one that does not answer is an
    outage, which the service waits out by design, so it passes."""

    async def probe() -> None:
        engine = create_engine(database_url, pool_size=1, connect_timeout=3.0)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1 FROM alembic_version"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(probe())
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) in (_NO_SUCH_DATABASE, _NO_SUCH_TABLE):
            raise CommandFailed(_database_refusal(database_address(database_url), exc)) from exc
    except (OSError, ArgumentError):
        return  # unreachable: the service waits for it
