"""A PgBouncer of the tests' own in transaction pooling mode, in front of a PostgreSQL server.

It listens on a free port on 127.0.0.1, trusts the users named at start, and forwards every
database name to the server. PgBouncer refuses to run as root: when the tests do, it runs as the
`postgres` OS user, who then owns its temporary directory. Debian's package installs it
(`apt-get install pgbouncer`; .ci/run does when it is missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import make_url

from tests.faults.pgserver import OS_USER, free_port
from tests.support import reachable

START_TIMEOUT = 10.0


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(found).exists():
        raise FileNotFoundError(
            "pgbouncer is not installed: `apt-get install -y pgbouncer` (.ci/run does it)"
        )
    return found


class PgBouncer:
    """`with PgBouncer(server_url, users=[...]) as bouncer:` until the block ends;
    `bouncer.url(database_url)` is the same database through it, with prepared statements off
    as batchops needs behind a transaction pooler."""

    def __init__(self, server_url: str, *, users: list[str], pool_size: int = 20) -> None:
        server = make_url(server_url)
        self._upstream = (server.host or "127.0.0.1", server.port or 5432)
        self._users = users
        self._pool_size = pool_size
        self._as_other_user = os.geteuid() == 0
        self.port = 0
        self.directory = Path()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """`database_url`'s database and user, through this PgBouncer."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        return url.render_as_string(hide_password=False)

    def __enter__(self) -> Self:
        self.directory = Path(tempfile.mkdtemp(prefix="batchops-pgbouncer-"))
        try:
            self.port = free_port()
            config = self._write_config()
            command = [pgbouncer_binary(), str(config)]
            if self._as_other_user:
                account = pwd.getpwnam(OS_USER)
                os.chown(self.directory, account.pw_uid, account.pw_gid)
                command = ["runuser", "-u", OS_USER, "--", *command]
            self._process = subprocess.Popen(
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._wait_until_listening()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # PgBouncer itself first, by the pid it wrote: under `runuser` the process started
        # here is runuser, which would leave its child running if killed alone.
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.directory / "pgbouncer.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def _write_config(self) -> Path:
        host, port = self._upstream
        (self.directory / "users.txt").write_text("".join(f'"{user}" ""\n' for user in self._users))
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self._pool_size}\n"
            "max_client_conn = 1000\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        return config

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not reachable("127.0.0.1", self.port):
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"pgbouncer exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"pgbouncer did not listen within {START_TIMEOUT}s")
            time.sleep(0.05)
