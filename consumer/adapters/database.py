"""Engines and the database itself: create it when missing, run Alembic migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    create_async_engine,
)

from consumer.adapters.statements import statement_options

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def create_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    command_timeout: float | None = None,
    connect_timeout: float = 10.0,
) -> AsyncEngine:
    """`command_timeout` bounds every statement, COMMIT included: a connection that went
    silent (a half-open TCP link) then fails like a dropped one instead of hanging forever;
    `connect_timeout` bounds the wait for a new connection (asyncpg's default is 60 s).
    `?prepared_statement_cache_size=0` in the URL keeps no prepared statement (statements.py)."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        # No pre-ping: it costs three round trips per checkout, and a dead pooled connection
        # already fails as a transient fault that the executor retries on a fresh one.
        # asyncpg's statement cache is per connection; keep it warm for the hot path.
        connect_args={
            **statement_options(database_url),
            "command_timeout": command_timeout,
            "timeout": connect_timeout,
        },
    )


async def in_transaction(database_url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """`work(conn)` in one transaction, committed when it returns, on an engine of its own
    that is disposed afterwards (for commands that run once and exit)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


async def create_database_if_missing(database_url: str) -> bool:
    """Create the database named in `database_url`; returns True when it had to be created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("BATCHOPS_DATABASE_URL names no database")
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists:
                return False
            quoted = admin.dialect.identifier_preparer.quote(name)
            await conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        await admin.dispose()


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Run Alembic migrations up to `revision` (synchronous: Alembic drives its own loop)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, revision)


async def upgrade(database_url: str) -> bool:
    created = await create_database_if_missing(database_url)
    await asyncio.to_thread(upgrade_database, database_url)
    return created


async def drop_database(database_url: str) -> bool:
    """Drop the database named in `database_url`, closing its connections; False when there
    was none."""
    url = make_url(database_url)
    if not url.database:
        raise ValueError("BATCHOPS_DATABASE_URL names no database")
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            quoted = admin.dialect.identifier_preparer.quote(url.database)
            await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            return bool(exists)
    finally:
        await admin.dispose()
