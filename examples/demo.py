"""`make demo`: the whole path on this machine, from an empty database to a finished batch.

Uses a database named `<your database>_demo` and the namespace `batchops-demo`, so it never
touches real data, and removes both when it ends (`batchops teardown --yes`), whatever happened.
Run it as `.venv/bin/python examples/demo.py` once batchops is installed (`make install`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.config import Settings

EXAMPLE = Path(__file__).resolve().parent / "order_update.json"
BATCHOPS = str(Path(sys.executable).with_name("batchops"))
READY_TIMEOUT = 30.0


def main() -> int:
    settings = Settings()
    url = make_url(settings.database_url)
    demo_url = url.set(database=f"{url.database or 'batchops'}_demo")
    port = _free_port()
    env = {
        **os.environ,
        "BATCHOPS_DATABASE_URL": demo_url.render_as_string(hide_password=False),
        "BATCHOPS_AMQP_URL": settings.amqp_url,
        "BATCHOPS_NAMESPACE": "batchops-demo",
        "BATCHOPS_LOG_FORMAT": "json",
        # A free port of its own, so that a busy :8000 cannot fail the demo; its /readyz says
        # when the service consumes.
        "BATCHOPS_HTTP_HOST": "127.0.0.1",
        "BATCHOPS_HTTP_PORT": str(port),
    }
    _step(f"fresh demo database {demo_url.database!r}")
    asyncio.run(_drop_database(env["BATCHOPS_DATABASE_URL"]))
    try:
        return _demonstrate(env, port)
    finally:
        _step("cleaning up: the demo's database, queues and exchanges")
        _run([BATCHOPS, "teardown", "--yes"], env)


def _demonstrate(env: dict[str, str], port: int) -> int:
    _run([BATCHOPS, "db", "upgrade"], env)
    _run([BATCHOPS, "seed", "--orders", "20"], env)

    _step("starting `batchops serve` (consumer + outbox relay + HTTP API)")
    log_path = Path(".demo") / "serve.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        service = subprocess.Popen([BATCHOPS, "serve"], env=env, stderr=log, stdout=log)  # noqa: S603
        try:
            _wait_until_ready(port, log_path, service)
            _step(f"publishing {EXAMPLE.name}: professional 1 (user 6) updates three orders")
            print(EXAMPLE.read_text(encoding="utf-8"))
            published = _run([BATCHOPS, "publish", str(EXAMPLE), "--wait", "--timeout", "30"], env)
        finally:
            _step("stopping the service with SIGTERM")
            service.send_signal(signal.SIGTERM)
            code = service.wait(timeout=30)
    print(f"service exited with code {code}; its log is in {log_path}")
    return 0 if published == 0 and code == 0 else 1


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _run(command: list[str], env: dict[str, str]) -> int:
    print(
        "$ "
        + " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command)),
        flush=True,
    )
    code = subprocess.run(command, env=env, check=False).returncode  # noqa: S603
    if code != 0 and command[1] != "publish":
        raise SystemExit(f"demo: {' '.join(command[1:])} failed with exit code {code}")
    return code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ready(port: int) -> bool:
    """/readyz answers 200 once the database and the broker answer and the consumer consumes."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False  # not listening yet, or 503: not ready yet


def _wait_until_ready(port: int, log_path: Path, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not _ready(port):
        if service.poll() is not None:
            raise SystemExit(f"demo: the service exited early; see {log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: the service was not ready after {READY_TIMEOUT}s")
        time.sleep(0.1)


async def _drop_database(database_url: str) -> None:
    url = make_url(database_url)
    engine = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            quoted = engine.dialect.identifier_preparer.quote(url.database or "")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
