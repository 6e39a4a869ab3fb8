"""A streaming standby of a test's own PostgreSQL server, made with pg_basebackup into a
temporary directory, replicating synchronously (the primary confirms no commit the standby has
not written), promoted at will. Like its primary it never touches the machine's server."""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from typing import Self

from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.faults.pgserver import DATABASE, OS_USER, SERVICE_ROLE, SUPERUSER, PostgresServer
from tests.integration.helpers import eventually

APPLICATION_NAME = "standby"


def multi_host_url(
    servers: Sequence[PostgresServer], *, user: str = SERVICE_ROLE, database: str = DATABASE
) -> str:
    """SQLAlchemy's URL naming every server, of which only the one accepting writes is used:
    `postgresql+asyncpg://user@/db?host=h1:p1&host=h2:p2&target_session_attrs=read-write`."""
    url = URL.create(
        "postgresql+asyncpg",
        username=user,
        database=database,
        query={
            "host": [f"127.0.0.1:{server.port}" for server in servers],
            "target_session_attrs": "read-write",
        },
    )
    return url.render_as_string(hide_password=False)


class StandbyServer(PostgresServer):
    """`async with StandbyServer(primary) as standby:` a hot standby of `primary`, on a port of
    its own; the primary then waits for it on every commit."""

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__()
        self.primary = primary

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        await self._make_replication_synchronous()
        return self

    async def promote(self) -> None:
        """Make the standby a primary that accepts writes (its old primary should be gone)."""
        await self._pg_ctl("promote", "-w", "-t", "60")

    async def _initdb(self) -> None:
        # Not an empty cluster: a copy of the primary's, streaming from it once started.
        home = self.data.parent
        if self._as_other_user:
            account = pwd.getpwnam(OS_USER)
            os.chown(home, account.pw_uid, account.pw_gid)
        await self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", SUPERUSER,
            "-D", str(self.data), "-X", "stream", "-R", "--no-sync", "--checkpoint=fast",
        )  # fmt: skip
        conf = {
            "unix_socket_directories": f"'{home}'",
            # Once promoted it has no standby of its own to wait for.
            "synchronous_standby_names": "''",
            "primary_conninfo": (
                f"'host=127.0.0.1 port={self.primary.port} user={SUPERUSER} "
                f"application_name={APPLICATION_NAME}'"
            ),
        }
        lines = "".join(f"{name} = {value}\n" for name, value in conf.items())
        # postgresql.auto.conf (where `-R` wrote its primary_conninfo) wins over postgresql.conf.
        with (self.data / "postgresql.auto.conf").open("a", encoding="utf-8") as config:
            config.write(f"\n# the test's own standby\n{lines}")

    async def _make_replication_synchronous(self) -> None:
        engine = create_async_engine(
            self.primary.url("postgres", user=SUPERUSER), isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as conn:
                await conn.execute(
                    text(f"ALTER SYSTEM SET synchronous_standby_names = '{APPLICATION_NAME}'")
                )
                await conn.execute(text("SELECT pg_reload_conf()"))

            async def synchronous() -> bool:
                async with engine.connect() as conn:
                    state = await conn.scalar(
                        text(
                            "SELECT sync_state FROM pg_stat_replication"
                            " WHERE application_name = :name"
                        ),
                        {"name": APPLICATION_NAME},
                    )
                return bool(state == "sync")

            await eventually(synchronous, what="the standby replicating synchronously", timeout=30)
        finally:
            await engine.dispose()
