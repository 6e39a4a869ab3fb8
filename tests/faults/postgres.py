"""Restarting this machine's own PostgreSQL cluster, and making sure it is back afterwards.

Restarting disrupts everybody using the server (other test runs share it): the suite does it
once, and always brings the server back, even when the scenario fails.
"""

from __future__ import annotations

import asyncio
import shutil

from sqlalchemy import make_url

from tests.faults.processes import REPOSITORY

SERVICES_UP = REPOSITORY.parent / "shared" / "scripts" / "services-up"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def restartable(database_url: str) -> bool:
    """Whether the scenario database lives on a local cluster this machine can restart."""
    host = make_url(database_url).host or "localhost"
    return host in LOCAL_HOSTS and shutil.which("pg_ctlcluster") is not None


async def _run(*command: str, timeout: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode(errors="replace")


async def restart(major_version: int) -> None:
    code, out = await _run(
        "pg_ctlcluster", "--skip-systemctl-redirect", str(major_version), "main", "restart"
    )
    if code != 0:
        raise AssertionError(f"pg_ctlcluster restart failed ({code}): {out}")


async def ensure_up(major_version: int) -> None:
    """Start the cluster if it is down and wait until it answers."""
    if SERVICES_UP.exists():
        code, out = await _run(str(SERVICES_UP), timeout=90)
    else:
        await _run(
            "pg_ctlcluster", "--skip-systemctl-redirect", str(major_version), "main", "start"
        )
        code, out = await _run("pg_isready", "-h", "127.0.0.1", "-t", "60", timeout=90)
    if code != 0:
        raise AssertionError(f"PostgreSQL did not come back: {out}")
