"""A PostgreSQL server of the test's own: initdb into a temporary directory, a free port on
127.0.0.1, stopped and restarted at will, always torn down. Faults that take the server away
never touch the machine's shared one (port 5432), which other test runs use.

The server binaries refuse to run as root: when the tests do (here and in CI) they run as the
`postgres` OS user, who then owns the temporary directory. The cluster skips fsync (`-c
fsync=off`, `initdb --no-sync`): no test crashes the operating system, and a crashed or
immediately stopped server still recovers everything it acknowledged from its WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.adapters.database import upgrade_database
from consumer.adapters.seed import seed

ShutdownMode = Literal["smart", "fast", "immediate"]
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs the server binaries when the tests run as root
# The role batchops connects as: not a superuser, so that the server's reserved superuser
# slots stay free for the test's own connections when another client exhausts the rest.
SERVICE_ROLE = "batchops"
DATABASE = "batchops"
PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres live (`pg_config --bindir`, else the newest
    /usr/lib/postgresql/*/bin)."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        candidate = Path(found.stdout.strip())
        if found.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").exists():
            return candidate
    raise FileNotFoundError("no PostgreSQL server binaries (initdb) found on this machine")


class PostgresServer:
    """One private cluster: `async with PostgresServer() as server:` runs it until the block
    ends; `stop()`, `start()`, `restart()` and `down_for()` are the faults.

    `settings` are extra postgresql.conf lines (e.g. `{"max_connections": "40"}`); they hold
    across restarts.
    """

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self._settings = dict(settings or {})
        self._bin = bin_dir()
        self._as_other_user = os.geteuid() == 0
        self.directory: Path | None = None
        self.port = 0
        self.running = False

    @property
    def data(self) -> Path:
        if self.directory is None:
            raise RuntimeError("use the server as `async with PostgresServer() as server:`")
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.data.parent / "server.log"

    def url(
        self,
        database: str = DATABASE,
        *,
        user: str = SERVICE_ROLE,
        driver: str = "postgresql+asyncpg",
    ) -> str:
        """A URL to `database` on this server as `user` (no password: trust); SQLAlchemy's by
        default, `driver="postgresql"` for asyncpg or libpq themselves."""
        url = URL.create(driver, username=user, host="127.0.0.1", port=self.port, database=database)
        return url.render_as_string(hide_password=False)

    async def __aenter__(self) -> Self:
        # Not under pytest's tmp_path: the server's OS user must be able to reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="batchops-pg-"))
        try:
            await self._initdb()
            for attempt in range(PORT_ATTEMPTS):
                self.port = free_port()
                try:
                    await self.start()
                    break
                except AssertionError:
                    # Somebody took the free port before the server bound it: another one.
                    taken = "Address already in use" in self.log_tail()
                    if attempt + 1 == PORT_ATTEMPTS or not taken:
                        raise
        except BaseException:
            await self._destroy()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._destroy()

    async def start(self) -> None:
        """Start the server and wait until it accepts connections (crash recovery included)."""
        # The port is given at each start (a restart keeps it), not in postgresql.conf.
        await self._pg_ctl(
            "start", "-w", "-t", "120", "-l", str(self.log_path), "-o", f"-p {self.port}"
        )
        self.running = True

    async def stop(self, mode: ShutdownMode = "fast") -> None:
        """`fast`: roll back open transactions and disconnect everyone; `immediate`: kill
        every server process at once, as a crash does (recovery runs at the next start)."""
        await self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        self.running = False

    async def restart(self, mode: ShutdownMode = "fast") -> None:
        await self.stop(mode)
        await self.start()

    @contextlib.asynccontextmanager
    async def down(self, mode: ShutdownMode = "fast") -> AsyncIterator[None]:
        """The server is stopped for the block's duration and started again after it, even
        when the block fails."""
        await self.stop(mode)
        try:
            yield
        finally:
            await self.start()

    async def down_for(self, seconds: float, mode: ShutdownMode = "fast") -> None:
        async with self.down(mode):
            await asyncio.sleep(seconds)  # the outage itself: nothing to wait on

    async def create_service_database(self, *, orders: int) -> str:
        """Create the batchops role and database, migrate it with our Alembic migrations and
        seed the marketplace with `orders` orders; returns the service's URL."""
        admin = create_async_engine(
            self.url("postgres", user=SUPERUSER), isolation_level="AUTOCOMMIT"
        )
        try:
            async with admin.connect() as conn:
                await conn.execute(text(f"CREATE ROLE {SERVICE_ROLE} LOGIN"))
                await conn.execute(text(f"CREATE DATABASE {DATABASE} OWNER {SERVICE_ROLE}"))
        finally:
            await admin.dispose()
        url = self.url()
        await asyncio.to_thread(upgrade_database, url)
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await seed(conn, order_count=orders)
        finally:
            await engine.dispose()
        return url

    def log_count(self, *needles: str) -> int:
        """How many lines of the server's log contain any of `needles` (it logs warnings and
        errors: refused connections, deadlocks)."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return 0
        return sum(any(needle in line for needle in needles) for line in lines)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text_ = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text_.splitlines()[-lines:])

    async def _initdb(self) -> None:
        home = self.data.parent
        if self._as_other_user:
            account = pwd.getpwnam(OS_USER)
            os.chown(home, account.pw_uid, account.pw_gid)
        await self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "--no-sync",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        conf = {
            "listen_addresses": "'127.0.0.1'",
            # A socket directory of its own: the shared one may belong to the machine's server.
            "unix_socket_directories": f"'{home}'",
            "fsync": "off",
            "log_min_messages": "warning",
            **self._settings,
        }
        lines = "".join(f"{name} = {value}\n" for name, value in conf.items())
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as config:
            config.write(f"\n# the test's own server\n{lines}")

    async def _pg_ctl(self, *args: str) -> None:
        await self._run("pg_ctl", "-D", str(self.data), *args)

    async def _run(self, program: str, *args: str, timeout: float = 180) -> None:
        command = [str(self._bin / program), *args]
        if self._as_other_user:
            command = ["runuser", "-u", OS_USER, "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.directory,  # the server's OS user may not enter the caller's directory
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"{program} {' '.join(args)} took over {timeout}s:\n{self.log_tail()}"
            ) from None
        if process.returncode != 0:
            raise AssertionError(
                f"{program} {' '.join(args)} failed ({process.returncode}):\n"
                f"{out.decode(errors='replace')}\n{self.log_tail()}"
            )

    async def _destroy(self) -> None:
        if self.directory is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                await self._pg_ctl("stop", "-w", "-t", "60", "-m", "immediate")
        finally:
            self.running = False
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
